"""PT: the clinician's portal at NCP-B (sign in, identify, find, read), server-side viewing with both MCWG
options (central hub 1.7.2, source server 1.7.3), the WIA facade (1.8) and a refused session."""

from __future__ import annotations

import json

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.multipart import MultipartDecoder
from ncp.model import StudyRecord
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import ScenarioSkipped, scenario
from ncp.scenario.portal import PortalUser, decoded_size, non_blank

_OPTIONS = {"hub": ("central hub (MCWG 1.7.2)", "1.7.2"), "source": ("source server (MCWG 1.7.3)", "1.7.3")}


def _ct(ctx: ScenarioContext) -> StudyRecord:
    return ctx.study(ctx.source, lambda s: s.modalities == ("CT",), "with a CT")


def _in_context(ctx: ScenarioContext, study: StudyRecord) -> PortalUser:
    user = PortalUser(ctx, ctx.treatment)
    with ctx.step(f"sign in at NCP-{ctx.treatment}'s portal and identify patient {study.patient.id}"):
        user.sign_in()
        page = user.identify(study.patient)
        ctx.require(page.status_code == 200, f"the documents page answered 200 (got {page.status_code})")
        ctx.check("no token in the page", "eyJ" not in page.text, f"{len(page.text)} characters")
    return user


@scenario(
    "PT-001",
    "Portal: sign in, identify, filter, read the report",
    tags=("portal",),
    mcwg=("1.1", "2.1", "2.2", "2.5"),
    transactions=("ITI-71", "ITI-78", "ITI-67", "ITI-68"),
)
def portal_documents(ctx: ScenarioContext) -> None:
    """A clinician of B signs in, identifies the patient across the border, narrows the list by region and
    modality (level 1) and by procedure (level 2), and opens the report inline."""
    study = ctx.study(ctx.source, lambda s: True, "at all")
    user = _in_context(ctx, study)
    with ctx.step("filter by region and modality, then select the procedure"):
        region, modality = study.anatomical_region.code, study.modalities[0]
        page = user.get("/documents", region=region, modality=modality, procedure=study.procedure.display)
        rows = page.text.count("<tr class=")
        ctx.check("the study's documents are listed", rows >= 1, f"{rows} rows", mcwg=("1.1", "2.1", "2.2"))
        ctx.check(
            "level 2: only the procedure's documents",
            page.text.count(study.procedure.display) >= rows,
            study.procedure.display,
            mcwg=("2.5",),
        )
        user.page = page
        reports = user.links("report")
    if reports:
        with ctx.step("open the report (ITI-68, PDF inline)"):
            user.open(reports[0])
            pdf = user.get(reports[0].removeprefix("/portal") + "/content")
            ctx.check(
                "a PDF, inline", pdf.content[:5] == b"%PDF-", pdf.headers.get("content-disposition", "")
            )


def _view(ctx: ScenarioContext, option: str) -> None:
    label, item = _OPTIONS[option]
    study = _ct(ctx)
    user = _in_context(ctx, study)
    with ctx.step("open the study: the KOS manifest's series (ITI-68)"):
        user.page = user.get("/documents")
        studies = user.links("study")
        ctx.require(bool(studies), "the patient's studies are listed")
        for link in studies:
            user.open(link)
            if study.series[0].series_instance_uid in user.page.text:
                break
        views = [v for v in user.links("view") if v.endswith(f"option={option}")]
        ctx.require(bool(views), "the study page offers the viewer")
    with ctx.step(f"view the CT series: {label}"):
        user.open(views[0])
        slices = user.slices()
        images = [user.get(s, preset="default") for s in slices]
        ctx.check(
            f"every slice served by the {label.split(' (')[0]}",
            all(
                i.status_code == 200 and i.headers.get("x-viewing-option", "").startswith(label)
                for i in images
            ),
            "; ".join(f"{i.status_code} {i.headers.get('x-served-in-ms', '?')} ms" for i in images),
            mcwg=(item,),
        )
        sizes = {decoded_size(i.content) for i in images}
        ctx.check(
            "PNG images of the slices' size, not blank",
            len(sizes) == 1 and None not in sizes and all(non_blank(i.content) for i in images),
            f"{len(images)} slices, {sizes}",
            mcwg=(item,),
        )
    with ctx.step("change the window: lung"):
        lung = user.get(slices[0], preset="lung")
        ctx.check("the lung window changes the image", lung.content != images[0].content, "", mcwg=(item,))


@scenario(
    "PT-002",
    "Server-side viewing: central hub (NCP-B renders)",
    tags=("portal", "viewing"),
    mcwg=("1.7.2",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
)
def hub_viewing(ctx: ScenarioContext) -> None:
    """NCP-B's hub retrieves the native CT instances with XC-WADO and renders them for a plain browser."""
    _view(ctx, "hub")


@scenario(
    "PT-003",
    "Server-side viewing: source server (country A renders)",
    tags=("portal", "viewing", "rendered"),
    mcwg=("1.7.3",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
)
def source_viewing(ctx: ScenarioContext) -> None:
    """The same viewer, fed by RAD-160 /rendered answers from the source (PS3.18 10.4.1.1.3)."""
    _view(ctx, "source")


@scenario(
    "PT-004",
    "WIA facade: QIDO-RS lists, WADO-RS opens the patient's studies",
    tags=("portal", "wia"),
    mcwg=("1.8",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
)
def wia_facade(ctx: ScenarioContext) -> None:
    """A DICOMweb client at {B}/wia/dicom-web with its treatment token: the studies come from the manifests
    (no QIDO crosses the border), a series comes through RAD-160."""
    if not ctx.target.secure:
        raise ScenarioSkipped(
            "the facade knows the patient from the bearer treatment token: security must be on"
        )
    study = _ct(ctx)
    consumer: ImagingConsumer = ctx.consumer(ctx.treatment, study.patient)
    base = f"{ctx.gateway(ctx.treatment)}/wia/dicom-web"
    headers = {**consumer.headers, "Accept": "application/dicom+json"}
    with ctx.step("QIDO-RS studies"):
        found = ctx.http("GET", f"{base}/studies", headers=headers)
        uids = (
            {r["0020000D"]["Value"][0] for r in json.loads(found.content or b"[]")}
            if found.is_success
            else set()
        )
        expected = {
            s.study_instance_uid for s in ctx.studies(ctx.source, lambda s: s.patient == study.patient)
        }
        ctx.check(
            "exactly the patient's studies", uids == expected, f"{len(uids)} / {len(expected)}", mcwg=("1.8",)
        )
    series = study.series[0]
    with ctx.step("QIDO-RS series, then WADO-RS the first series"):
        listed = ctx.http("GET", f"{base}/studies/{study.study_instance_uid}/series", headers=headers)
        ctx.check("the study's series listed", series.series_instance_uid in listed.text, "", mcwg=("1.8",))
        url = f"{base}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
        got = ctx.http(
            "GET", url, headers={**consumer.headers, "Accept": 'multipart/related; type="application/dicom"'}
        )
        parts = []
        if got.status_code == 200:
            decoder = MultipartDecoder(got.headers.get("content-type", ""))
            parts = decoder.feed(got.content)
        ctx.check(
            "every instance of the series arrived",
            len(parts) == len(series.instances),
            f"{got.status_code}: {len(parts)} / {len(series.instances)} instances",
            mcwg=("1.8",),
        )


@scenario(
    "PT-005",
    "Portal: a session cookie replayed after sign-out, a cross-site form post",
    tags=("portal", "negative"),
    transactions=("ITI-71",),
)
def refused_session(ctx: ScenarioContext) -> None:
    """Sign-out ends the session on the server: its cookie opens nothing afterwards (401); a form posted
    from another site is refused (403); both answers are pages that say what happened."""
    study = _ct(ctx)
    user = _in_context(ctx, study)
    with ctx.step("a form posted from another site"):
        evil = ctx.http(
            "POST", f"{user.base}/signout", headers={"Origin": "https://evil.example"}, data={"csrf": "x"}
        )
        ctx.check(
            "403, said so", evil.status_code == 403 and "another site" in evil.text, str(evil.status_code)
        )
    cookie = ctx.cookie("portal_session") or ""
    with ctx.step("sign out, then replay the session cookie"):
        user.post("/signout")
        replay = ctx.http("GET", f"{user.base}/documents", headers={"Cookie": f"portal_session={cookie}"})
        ctx.check(
            "401 after sign-out, no trace",
            replay.status_code == 401 and "Traceback" not in replay.text and "signed in" in replay.text,
            str(replay.status_code),
        )
