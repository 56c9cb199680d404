"""The pure parts of the load tests: what counts as a correct retrieval, metrics, profiles, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from checks import (
    KOS_SOP_CLASS,
    FramesCheck,
    MultipartCheck,
    Thresholds,
    hop_breakdown,
    metadata_verdict,
    server_timing,
)
from metrics import Histogram, Metrics
from profiles import stage
from pydicom.dataset import Dataset
from state import StateError, load_state
from summary import summarize

from ncp.dicom.kos import to_part10
from ncp.dicom.multipart import encode_multipart_bytes
from ncp.dicom.uids import deterministic_uid

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
CT = "1.2.840.10008.5.1.4.1.1.2"
BOUNDARY = "b-123"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def instance(n: int, sop_class: str = CT) -> tuple[str, bytes]:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = deterministic_uid("load-test", n)
    ds.PatientID = "P1"
    return ds.SOPInstanceUID, to_part10(ds)


def feed(bodies: list[bytes], chunk: int = 7) -> MultipartCheck:
    message = encode_multipart_bytes(bodies, "application/dicom", BOUNDARY)
    check = MultipartCheck(CONTENT_TYPE)
    for i in range(0, len(message), chunk):  # awkward chunk sizes, as a socket delivers them
        check.feed(message[i : i + chunk])
    return check


def test_the_pure_modules_never_import_locust() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import state, checks, metrics, profiles, summary, run;"
        "bad = [m for m in ('locust', 'gevent') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(LOADTESTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_retrieval_is_correct_when_exactly_the_manifest_instances_arrive() -> None:
    parts = [instance(n) for n in range(3)]
    check = feed([body for _, body in parts])
    assert check.verdict([uid for uid, _ in parts]) is None
    assert check.received == [uid for uid, _ in parts]
    assert check.size > sum(len(body) for _, body in parts)


def test_a_missing_or_unexpected_instance_fails_the_retrieval_though_the_status_was_200() -> None:
    parts = [instance(n) for n in range(3)]
    check = feed([body for _, body in parts[:2]])
    assert check.verdict([uid for uid, _ in parts]) == (
        "instances differ from those referenced: 1 missing, 0 unexpected"
    )
    check = feed([body for _, body in parts])
    assert "1 unexpected" in str(check.verdict([uid for uid, _ in parts[:2]]))


def test_a_duplicate_or_a_truncated_message_fails_the_retrieval() -> None:
    uid, body = instance(1)
    assert feed([body, body]).verdict([uid]) == "1 instance(s) sent twice"
    message = encode_multipart_bytes([body], "application/dicom", BOUNDARY)
    check = MultipartCheck(CONTENT_TYPE)
    check.feed(message[: len(message) // 2])  # the connection dropped mid-study
    assert "truncated" in str(check.verdict([uid]))


def test_a_part_that_is_not_dicom_part10_fails_the_retrieval() -> None:
    check = feed([b"not dicom at all" * 20])
    assert "Part 10" in str(check.verdict([]))


def test_study_level_retrievals_may_hold_an_unlisted_kos_but_nothing_else() -> None:
    image_uid, image = instance(1)
    kin_uid, kin = instance(2, KOS_SOP_CLASS)
    check = feed([image, kin])
    assert check.kos == {kin_uid}
    assert check.verdict([image_uid], extra_kos=True) is None
    assert check.verdict([image_uid]) is not None


def test_server_timing_splits_the_time_to_first_byte_per_hop() -> None:
    header = 'ncp-fr-border;desc="upstream headers";dur=5.3, ncp-at-gateway;desc="upstream headers";dur=17.9'
    timings = server_timing(header)
    assert timings == [("ncp-fr-border", 5.3), ("ncp-at-gateway", 17.9)]
    shares = dict(hop_breakdown(25.0, timings))
    assert shares == pytest.approx({"ncp-at-gateway": 7.1, "ncp-fr-border": 12.6, "origin": 5.3})
    assert sum(shares.values()) == pytest.approx(25.0)
    assert hop_breakdown(25.0, server_timing(None)) == []


def test_histograms_merged_from_workers_give_the_percentiles_of_the_whole() -> None:
    whole, one, two = Histogram(), Histogram(), Histogram()
    for i, ms in enumerate(range(1, 301)):
        whole.add(ms)
        (one if i % 2 else two).add(ms)
    merged = Histogram()
    merged.merge(json.loads(json.dumps(one.to_json())))  # as shipped to the master
    merged.merge(json.loads(json.dumps(two.to_json())))
    assert merged.counts == whole.counts
    assert merged.percentile(0.95) == whole.percentile(0.95) == 280.0  # 10 ms buckets above 100 ms
    assert Histogram().percentile(0.5) is None


def test_metrics_drained_by_workers_add_up_at_the_master() -> None:
    worker, master = Metrics(), Metrics()
    worker.retrieval("s", ttfb_ms=10, total_ms=40, size=1000, instances=4, hops=[("origin", 3.0)])
    worker.flow(120, ok=True)
    master.merge(worker.drain())
    worker.retrieval("s", ttfb_ms=20, total_ms=60, size=500, instances=2)
    worker.flow(0, ok=False)
    master.merge(worker.drain())
    got = master.names["s"]
    assert (got.retrievals, got.bytes, got.instances) == (2, 1500, 6)
    assert got.transfer_s == pytest.approx(0.1)
    assert (master.flows.count, master.flows_failed) == (1, 1)
    assert worker.drain()["names"] == {}


def test_profiles_schedule_users_over_the_run_and_end_it() -> None:
    ramp = [stage("ramp", t, 10, 2.0, 100)[0] for t in (0, 25, 45, 65, 99)]  # type: ignore[index]
    assert ramp == [2, 4, 6, 8, 10]
    spike = [stage("spike", t, 8, 1.0, 100) for t in (10, 50, 90)]
    assert spike == [(2, 8.0), (8, 8.0), (2, 8.0)]
    assert stage("steady", 59.9, 4, 1.0, 60) == (4, 1.0)
    assert stage("soak", 0, 10, 1.0, 1000)[0] < 10  # type: ignore[index]
    assert all(stage(p, 60, 4, 1.0, 60) is None for p in ("ramp", "steady", "spike", "soak"))
    with pytest.raises(ValueError, match="unknown profile"):
        stage("chaos", 0, 1, 1.0, 1)


def test_a_state_file_with_an_invalid_uid_is_refused_before_any_request(tmp_path: Path) -> None:
    state = {
        "topology": "builtin:default",
        "countries": {
            "FR": {"home_community_id": "2.999.1", "patient_id_issuer": "2.999.2",
                   "gateway": "http://127.0.0.1:1", "pacs": {"2.25.1": "http://127.0.0.1:2/dicom-web"}},
            "AT": {"home_community_id": "2.999.3", "patient_id_issuer": "2.999.4",
                   "gateway": "http://127.0.0.1:3", "pacs": {}},
        },
        "catalogue": {"patients": [{"country": "FR", "id": "P1", "issuer": "2.999.2", "studies": [
            {"study_instance_uid": "1.2.3", "series": [
                {"series_instance_uid": "../../etc", "retrieve_location_uid": "2.25.1"}]}]}]},
    }  # fmt: skip
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    with pytest.raises(StateError, match="not a valid DICOM UID"):
        load_state(path)
    state["catalogue"]["patients"][0]["studies"][0]["series"][0]["series_instance_uid"] = "1.2.3.4"  # type: ignore[index]
    path.write_text(json.dumps(state))
    loaded = load_state(path)
    ((b, patient, _study),) = loaded.visits()
    assert (b.code, patient.country) == ("AT", "FR")  # default: the first country not the patient's
    with pytest.raises(StateError, match="no study"):
        loaded.visits("FR")


def test_the_summary_fails_when_reported_totals_differ_from_what_the_workers_sent(tmp_path: Path) -> None:
    header = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%,100%,Average Content Size\n"
    (tmp_path / "locust_stats.csv").write_text(
        header + "GET,0 /fhir/Patient,10,0,1.0,5,9,9,9,100\n,Aggregated,10,0,1.0,5,9,9,9,100\n"
    )
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for i, n in enumerate((6, 5)):  # 11 sent, 10 reported: a final report was lost
        (ledger / f"worker-{i}.json").write_text(json.dumps({"requests": {"GET 0 /fhir/Patient": n}}))
    summary = summarize(tmp_path / "locust", Thresholds(0.0, 100.0), ledger_dir=ledger)
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["stats complete"]["ok"] is False
    assert "11 vs 10" in checks["stats complete"]["detail"]
    assert checks["fail ratio"]["ok"] and checks["p95"]["ok"]
    assert summary["ok"] is False


def test_hop_shares_add_up_to_the_mean_ttfb_when_one_name_mixes_two_routes(tmp_path: Path) -> None:
    """FR->AT and AT->FR retrievals share a URL template: a hop crossed by half of them counts half."""
    header = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%,100%,Average Content Size\n"
    (tmp_path / "locust_stats.csv").write_text(
        header + "GET,s,2,0,1.0,30,30,30,30,100\n,Aggregated,2,0,1,30,30,30,30,100\n"
    )
    m = Metrics()
    m.retrieval(
        "s", ttfb_ms=30, total_ms=40, size=10, instances=1, hops=[("ncp-at-gateway", 20.0), ("origin", 10.0)]
    )
    m.retrieval(
        "s", ttfb_ms=30, total_ms=40, size=10, instances=1, hops=[("ncp-fr-gateway", 20.0), ("origin", 10.0)]
    )
    (tmp_path / "locust_xcwado.json").write_text(
        json.dumps({"started": 0, "stopped": 2, "metrics": m.to_json()})
    )
    hops = summarize(tmp_path / "locust", Thresholds())["retrievals"][0]["hops"]
    assert hops["ncp-at-gateway"]["mean_ms"] == 20 and hops["ncp-at-gateway"]["n"] == 1
    assert sum(h["share_ms"] for h in hops.values()) == 30  # the mean time to first byte


def test_xcwado_load_passes_every_option_to_the_runner() -> None:
    """`xcwado load --state FILE ...` reaches loadtests/run.py (argparse's REMAINDER used to refuse it)."""
    xcwado = [sys.executable, "-m", "ncp.cli", "load"]
    done = subprocess.run([*xcwado, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--processes" in done.stdout
    done = subprocess.run(
        [*xcwado, "--state", "/nonexistent/state.json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "cannot read state file" in done.stderr


FRAMES = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'


def frames_check(frames: list[bytes], *, cut: int = 0) -> FramesCheck:
    message = encode_multipart_bytes(frames, "application/octet-stream", BOUNDARY)
    check = FramesCheck(FRAMES)
    for i in range(0, len(message) - cut, 5):
        check.feed(message[i : min(i + 5, len(message) - cut)])
    return check


def test_a_frames_answer_holds_exactly_the_frames_asked_for() -> None:
    assert frames_check([b"\x00\x01" * 512]).verdict(1) is None
    assert frames_check([b"\x00" * 16, b"\x01" * 16]).verdict(1) == "2 frame(s) where 1 were asked for"
    assert frames_check([b""]).verdict(1) == "frame 1 is empty"
    assert frames_check([b"\x00" * 64], cut=4).verdict(1) is not None  # no closing delimiter: truncated


def test_series_metadata_must_describe_exactly_the_series_instances() -> None:
    uids = [deterministic_uid("load-test", n) for n in range(3)]
    datasets = [{"00080018": {"vr": "UI", "Value": [u]}} for u in uids]

    assert metadata_verdict(datasets, uids) is None
    assert metadata_verdict(datasets[:2], uids) == "metadata differs from the series: 1 missing, 0 unexpected"
    assert metadata_verdict([*datasets, datasets[0]], uids) == "an instance is described twice"
    assert metadata_verdict({"00080018": {}}, uids) == "metadata is not a JSON array of datasets (PS3.18 F.2)"
