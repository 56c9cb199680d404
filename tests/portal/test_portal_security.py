"""The portal's sessions and forms: the token stays on the server, a form from elsewhere or a cookie
from a finished session is refused, every refusal is a page that says what happened."""

from __future__ import annotations

import re
import time

import httpx
from portal_harness import Clinician, Portal, csrf_of

from ncp.portal.sessions import SessionStore

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}")


def test_the_session_cookie_is_httponly_samesite_strict_and_scoped_to_the_portal(
    clinician: Clinician,
) -> None:
    cookie = clinician.page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/portal" in cookie


def test_sign_in_replaces_the_session_id(clinician: Clinician) -> None:
    before = clinician.http.cookies["portal_session"]
    clinician.sign_in()
    assert clinician.page.url.path == "/portal/patient"
    assert clinician.http.cookies["portal_session"] != before


def test_no_page_carries_a_token_or_an_internal_address(portal: Portal, clinician: Clinician) -> None:
    study = portal.ct_study()
    clinician.sign_in()
    pages = [clinician.identify(study.patient)]
    pages += [clinician.http.get(u) for u in clinician.links("study") + clinician.links("report")]
    pages += [clinician.http.get(u) for u in re.findall(r'href="(/portal/view/[^"]+)"', pages[1].text)[:1]]
    registries = list(portal.fed.plan.endpoints["FR"].registries.values())
    for page in pages:
        assert page.status_code == 200
        assert not JWT.search(page.text)
        assert "/wado/" not in page.text and "/fhir/" not in page.text
        assert not any(r.split("//")[1].split("/")[0] in page.text for r in registries)
        assert "token" not in " ".join(page.headers.values()).lower()


def test_a_cookie_replayed_after_sign_out_is_refused(portal: Portal, clinician: Clinician) -> None:
    clinician.sign_in()
    clinician.identify(portal.ct_study().patient)
    cookie = clinician.http.cookies["portal_session"]
    assert clinician.http.get("/portal/documents").status_code == 200
    signed_out = clinician.post("/portal/signout")
    assert signed_out.url.path == "/portal/" and "Sign in" in signed_out.text
    replay = httpx.get(f"{portal.gateway}/portal/documents", cookies={"portal_session": cookie})
    assert replay.status_code == 401
    assert "not signed in" in replay.text.lower() and "Traceback" not in replay.text


def test_a_cross_site_form_post_is_refused(portal: Portal, clinician: Clinician) -> None:
    clinician.sign_in()
    csrf = csrf_of(clinician.page.text)
    patient = portal.ct_study().patient
    form = {"csrf": csrf, "issuer": patient.issuer, "patient_id": patient.id}
    evil = clinician.http.post("/portal/patient", data=form, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "another site" in evil.text
    fetch = clinician.http.post("/portal/patient", data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    forged = clinician.http.post("/portal/patient", data={**form, "csrf": "guessed"})
    assert forged.status_code == 403 and "not from your current session" in forged.text
    tokenless = clinician.http.post("/portal/signout", data={})
    assert tokenless.status_code == 403
    assert clinician.http.get("/portal/patient").status_code == 200  # none of it ended the session


def test_documents_need_a_treatment_context(portal: Portal, clinician: Clinician) -> None:
    assert clinician.http.get("/portal/documents").status_code == 401
    clinician.sign_in()
    refused = clinician.http.get("/portal/documents")
    assert refused.status_code == 403 and "identify the patient first" in refused.text


def test_an_unknown_patient_is_said_so_and_opens_no_context(portal: Portal, clinician: Clinician) -> None:
    clinician.sign_in()
    answer = clinician.post(
        "/portal/patient", issuer=portal.ct_study().patient.issuer, patient_id="199999999999999"
    )
    assert answer.status_code == 404 and "No patient 199999999999999 is known to FR" in answer.text
    assert clinician.http.get("/portal/documents").status_code == 403


def test_refusals_are_pages_that_say_what_happened(portal: Portal, clinician: Clinician) -> None:
    clinician.sign_in()
    clinician.identify(portal.ct_study().patient)
    unknown = clinician.http.get("/portal/study/FR.national.nope")
    assert unknown.status_code == 404 and "search again" in unknown.text
    bad = clinician.http.get("/portal/documents", params={"region": "<x>"})
    assert bad.status_code == 400 and "&lt;x&gt;" not in bad.text and "Traceback" not in bad.text
    for response in (unknown, bad):
        assert response.headers["content-type"].startswith("text/html")
        assert "Back to the portal" in response.text


def test_markup_in_data_renders_as_text(portal: Portal, clinician: Clinician) -> None:
    clinician.sign_in()
    page = clinician.identify(portal.markup_patient())
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img src=x" not in page.text and "<b onclick" not in page.text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(&#39;study&#39;)&gt; follow-up" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_session_ends_with_its_deadline_and_takes_its_images_along() -> None:
    store = SessionStore()
    session = store.new()
    session.cache.put("1.2.3", b"pixels")
    session.expires_at = time.time() - 1
    assert store.get(session.id) is None
    assert len(session.cache) == 0 and session.bearer is None


def test_sign_out_drops_the_session_and_the_images_it_fetched() -> None:
    store = SessionStore()
    session = store.new()
    session.hcp_token = "an HCP token"
    session.cache.put("1.2.3", b"pixels")
    store.end(session)
    assert store.get(session.id) is None
    assert len(session.cache) == 0 and session.bearer is None


def test_a_source_that_cannot_be_reached_is_said_so_never_with_a_trace(
    portal: Portal, clinician: Clinician
) -> None:
    study = portal.ct_study()
    clinician.sign_in()
    clinician.identify(study.patient)
    series = study.series[0]
    doc = next(
        link.rsplit("/", 1)[-1]
        for link in clinician.links("study")
        if series.series_instance_uid in clinician.http.get(link).text
    )
    pacs = portal.fed.topology.country("FR").pacs_by_rluid(series.retrieve_location_uid)
    assert pacs is not None
    image = f"/portal/image/hub/{doc}/{series.series_instance_uid}/{series.instances[-1].sop_instance_uid}"
    with portal.fed.role_down(f"FR/pacs/{pacs.id}"):
        answer = clinician.http.get(image)
        viewer = clinician.http.get(f"/portal/view/{doc}/{series.series_instance_uid}")
    assert answer.status_code == 502 and answer.headers["content-type"].startswith("text/plain")
    assert (
        answer.text.startswith("502: ") and "Traceback" not in answer.text and "127.0.0.1" not in answer.text
    )
    assert viewer.status_code == 200  # the manifest was read: the viewer opens, each slice says why it failed


def test_a_flood_of_sign_in_forms_does_not_evict_a_signed_in_clinician() -> None:
    store = SessionStore()
    clinician = store.new()
    clinician.hcp_token = "an HCP token"
    for _ in range(1500):
        store.new()
    assert store.get(clinician.id) is clinician


def test_hostile_input_is_refused_with_a_4xx_never_a_5xx(portal: Portal, clinician: Clinician) -> None:
    study = portal.ct_study()
    clinician.sign_in()
    odd = clinician.post("/portal/patient", issuer=study.patient.issuer, patient_id="a|b,c$d")
    assert 400 <= odd.status_code < 500
    clinician.identify(study.patient)
    doc = clinician.links("study")[0].rsplit("/", 1)[-1]
    series, sop = study.series[0].series_instance_uid, study.series[0].instances[0].sop_instance_uid
    hostile = [
        f"/portal/image/hub/{doc}/{series}/{sop}?frame=-1",
        f"/portal/image/hub/{doc}/{series}/{sop}?frame=99999",
        f"/portal/image/hub/{doc}/{series}/{sop}?preset=%3Cscript%3E",
        f"/portal/image/elsewhere/{doc}/{series}/{sop}",
        f"/portal/image/hub/{doc}/{series}/1.2.3",
        f"/portal/view/{doc}/{series}?option=%00",
        "/portal/report/..%2F..%2Fetc%2Fpasswd",
        "/portal/documents?modality=XX",
        "/wia/dicom-web/studies/not-a-uid",
        "/wia/dicom-web/studies?limit=abc&offset=-5",
    ]
    for path in hostile:
        answer = clinician.http.get(path, headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
        assert "Traceback" not in answer.text
    oversized = clinician.http.post("/portal/patient", data={f"f{i}": "x" for i in range(50)})
    assert 400 <= oversized.status_code < 500


def test_each_image_says_which_option_served_it_and_how_long_it_took(
    portal: Portal, clinician: Clinician
) -> None:
    clinician.sign_in()
    clinician.identify(portal.ct_study().patient)
    study_page = clinician.http.get(clinician.links("study")[0])
    viewer = re.findall(r'href="(/portal/view/[^"]+)\?option=hub"', study_page.text)[0]
    first = re.findall(r'data-src="([^"]+)"', clinician.http.get(viewer).text)[0]
    fetched = clinician.http.get(first, params={"preset": "default"})
    again = clinician.http.get(first, params={"preset": "bone"})
    rendered = clinician.http.get(first.replace("/hub/", "/source/"))
    assert fetched.headers["x-viewing-option"] in (
        "central hub (MCWG 1.7.2), retrieved by RAD-160",
        "central hub (MCWG 1.7.2), from the session cache",  # when the study page's thumbnail came first
    )
    assert again.headers["x-viewing-option"] == "central hub (MCWG 1.7.2), from the session cache"
    assert rendered.headers["x-viewing-option"] == "source server (MCWG 1.7.3)"
    for answer in (fetched, again, rendered):
        assert answer.headers["content-type"] == "image/png" and int(answer.headers["x-served-in-ms"]) >= 0
        assert answer.headers["server-timing"].startswith("rad160;dur=")
