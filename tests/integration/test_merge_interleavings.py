"""The merge's promise under crashes, pauses, throttling and replays: black-box, at the AWS calls.

The quick set of tests/integration/merge_interleavings.py (one test per part, so pytest-xdist
spreads them), then one deterministic test per known hazard (a-g). Every failure message ends
with a command that reruns the case and prints its plan and every invocation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.rows import dump_rows, row_json
from shared.tables import TABLES
from tests.integration import merge_interleavings as mi
from tests.integration.merge_interleavings import (
    BAD_INPUTS,
    BUCKET,
    QUICK,
    FileSpec,
    Invocation,
    Message,
    SlowDown,
    Upload,
    World,
    bad_copy,
    plan_named,
    run_plan,
    staff,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = TABLES["staff"]


# ---- the quick set -------------------------------------------------------------------------


@pytest.mark.parametrize("part", list(QUICK))
def test_quick_interleavings(part):
    name, select = QUICK[part]
    summary = run_plan(plan_named(name, 1), "quick", select=select)
    if summary.failed:
        pytest.fail(summary.text(), pytrace=False)


# ---- helpers for the hazards ---------------------------------------------------------------


def _put(w: World, index: int, area: str, rows: list[Any]) -> Upload:
    return w.put(index, FileSpec(area, dump_rows(SPEC, rows), list(rows)))


def _merge(w: World, upload: Upload, label: str) -> None:
    w.deliver([w.first_message(upload)], label)


def _problems(w: World, contracts: str = "123run") -> list[str]:
    found = [str(v) for v in w.check() if v.contract in contracts or v.contract == "run"]
    if found:
        found += [line for line in w.log if "error:" in line][:3]
    return found


def _fix_quarantined_copy(w: World, bad: Upload, rows: list[Any]) -> str:
    """The operator's fix in place: the quarantined copy overwritten with valid rows."""
    copies = [
        k
        for k in w.keys("quarantine/staff/")
        if not k.endswith(".report.json") and w.get(k) == bad.data
    ]
    assert copies, f"no quarantined copy of f{bad.index}: {w.keys('quarantine/staff/')}"
    w.s3.put_object(Bucket=BUCKET, Key=copies[0], Body=dump_rows(SPEC, rows))
    bad.rows = list(rows)  # the fixed rows are what this observation staged
    return copies[0]


def _dead_letter(w: World, upload: Upload) -> str:
    bodies = [b for b in w.dead_letters() if upload.version_id in b]
    assert bodies, f"f{upload.index}'s message never reached the DLQ"
    return bodies[0]


def _with_each_pause(case, calls: int) -> list[str]:
    """`case(pause_at)` for every call of the paused invocation; the failing ones."""
    failures = []
    for n in range(1, calls + 1):
        problems = case(n)
        if problems:
            failures.append(f"paused at call {n}: " + "; ".join(problems[:4]))
    return failures


# ---- a. twin redrives of a quarantined batch, fixed in place ------------------------------


def _twin_redrives(pause_at: int | None) -> tuple[list[str], int]:
    with World(seed=f"a:{pause_at}") as w:
        _merge(w, _put(w, 0, "baseline", [staff(1, 0, "k1v1"), staff(2, 0, "k2v2")]), "i1")
        fixed = [staff(2, 30, "k2fixed"), staff(3, 5, "k3new")]
        bad = w.put(1, FileSpec("staging", bad_copy("staff", fixed, "department_id", "two"), None))
        _merge(w, bad, "i2")
        body = _dead_letter(w, bad)
        w.sqs_dead.clear()  # the operator redrives it
        w.dlq_bodies.clear()
        _fix_quarantined_copy(w, bad, fixed)
        one, two = w.message(body, "redrive A"), w.message(body, "redrive B")
        if pause_at is None:  # the dry run: how many calls a redrive makes
            outcome = w.invoke([one], Invocation("A"))
            w.settle(outcome.failed, "A")
            w.deliver([two], "B")
            return _problems(w), len(outcome.calls)
        others: list[Message] = []

        def twin() -> None:
            others.extend(w.invoke([two], Invocation("B")).failed)

        outcome, _ = w.run_paused([one], Invocation("A", pause_at=pause_at), twin)
        w.settle(outcome.failed, "A")
        w.settle(others, "B")
        return _problems(w), len(outcome.calls)


def test_a_twin_redrives_of_a_quarantined_batch_fixed_in_place():
    problems, calls = _twin_redrives(None)
    failures = [f"one after the other: {'; '.join(problems[:4])}"] if problems else []
    failures += _with_each_pause(lambda n: _twin_redrives(n)[0], calls)
    assert not failures, "\n".join(failures)


# ---- b. two merges that stage the same late version fail before their commit ---------------


@pytest.mark.parametrize("retry_order", ["first-first", "second-first"])
def test_b_same_late_version_staged_by_two_failed_merges_is_in_history_once(retry_order):
    with World(seed=f"b:{retry_order}") as w:
        _merge(w, _put(w, 0, "baseline", [staff(1, 0, "k1v1"), staff(2, 0, "k2v2")]), "i1")
        late = staff(1, 10, "k1late")
        one = _put(w, 1, "staging", [late, staff(5, 3, "k5new")])
        two = _put(w, 2, "staging", [late, staff(6, 3, "k6new")])
        _merge(w, _put(w, 3, "staging", [staff(1, 20, "k1v3")]), "i2")  # observed last
        failed = []
        for upload, label in ((one, "i3"), (two, "i4")):
            slow = SlowDown(start=1, count=10**9, methods=frozenset({"PUT"}))
            outcome = w.invoke([w.first_message(upload)], Invocation(label, slow=slow))
            assert slow.answered, f"{label} never wrote to latest/ (the premise): {outcome.calls}"
            failed.append((outcome.failed, label))
        if retry_order == "second-first":
            failed.reverse()
        for messages, label in failed:
            w.settle(messages, label)
        history = w.history_texts()
        assert history.count(row_json(SPEC, late)) == 1, history
        problems = _problems(w)
        assert not problems, problems


# ---- c. silent edits delivered in reverse observation order --------------------------------


@pytest.mark.parametrize("batching", ["two invocations", "one batch"])
def test_c_silent_edits_in_reverse_observation_order_keep_the_later(batching):
    with World(seed=f"c:{batching}") as w:
        _merge(w, _put(w, 0, "baseline", [staff(1, 0, "k1v1")]), "i1")
        first = _put(w, 1, "staging", [staff(1, 0, "k1silentA")])
        second = _put(w, 2, "staging", [staff(1, 0, "k1silentB")])
        if batching == "one batch":
            w.deliver([w.first_message(second), w.first_message(first)], "i2")
        else:
            _merge(w, second, "i2")
            _merge(w, first, "i3")
        assert w.latest_texts() == [row_json(SPEC, staff(1, 0, "k1silentB"))]
        problems = _problems(w)
        assert not problems, problems


# ---- d. a replay of an old archive after a newer update ------------------------------------


def _first_event_ids(inv: Invocation) -> set[str]:
    return {json.loads(e["Detail"])["event_id"] for e in inv.events}


def test_d_replay_of_an_old_archive_after_a_newer_update_changes_nothing():
    with World(seed="d") as w:
        _merge(w, _put(w, 0, "baseline", [staff(1, 0, "k1v1"), staff(2, 0, "k2v2")]), "i1")
        archives = set(w.keys("archive/staff/"))
        update = _put(w, 1, "staging", [staff(1, 10, "k1v3")])
        first = Invocation("i2")
        w.deliver([w.first_message(update)], "i2", first)
        (archive,) = set(w.keys("archive/staff/")) - archives
        _merge(w, _put(w, 2, "staging", [staff(1, 20, "k1v4")]), "i3")
        latest, before = w.latest_texts(), w.snapshot()
        archived = w.versions("archive/")
        replay = w.replay(archive)
        again = Invocation("replay")
        outcome = w.deliver([w.message(replay.body, f"replay {archive}")], "replay", again)
        assert not outcome.failed, w.log
        assert w.latest_texts() == latest
        assert w.snapshot() == before, "objects under latest/ or history/ changed"
        assert w.versions("archive/") == archived, "the replay wrote an archive object"
        ids, first_ids = _first_event_ids(again), _first_event_ids(first)
        assert ids <= first_ids, f"replay emitted {sorted(ids)}; the first time {sorted(first_ids)}"
        problems = _problems(w)
        assert not problems, problems


def test_d_replay_of_a_baseline_archive_emits_only_the_first_event_ids():
    with World(seed="d-baseline") as w:
        first = Invocation("i1")
        base = _put(w, 0, "baseline", [staff(1, 0, "k1v1")])
        w.deliver([w.first_message(base)], "i1", first)
        archives = w.keys("archive/staff/")
        assert len(archives) == 1, f"the baseline's archive: {archives}"
        (archive,) = archives
        _merge(w, _put(w, 1, "staging", [staff(1, 10, "k1v3")]), "i2")
        before = w.snapshot()
        replay = w.replay(archive)
        again = Invocation("replay")
        w.deliver([w.message(replay.body, f"replay {archive}")], "replay", again)
        assert w.snapshot() == before, "objects under latest/ or history/ changed"
        ids, first_ids = _first_event_ids(again), _first_event_ids(first)
        assert ids <= first_ids, f"replay emitted {sorted(ids)}; the first time {sorted(first_ids)}"


# ---- e. a quarantined baseline, fixed in place and redriven --------------------------------


def test_e_quarantined_baseline_fixed_in_place_and_redriven_merges():
    with World(seed="e") as w:
        fixed = [staff(1, 0, "k1v1"), staff(2, 0, "k2v2"), staff(3, 0, "k3v3")]
        data = bad_copy("staff", fixed, "staff_id", "one")
        bad = w.put(0, FileSpec("baseline", data, None))
        _merge(w, bad, "i1")
        body = _dead_letter(w, bad)
        w.sqs_dead.clear()
        w.dlq_bodies.clear()
        _fix_quarantined_copy(w, bad, fixed)
        outcome = w.deliver([w.message(body, "redrive")], "redrive")
        assert not outcome.failed, [line for line in w.log if "error:" in line][:3]
        assert sorted(w.latest_texts()) == sorted(row_json(SPEC, r) for r in fixed)
        _merge(w, _put(w, 1, "staging", [staff(2, 10, "k2v4")]), "i2")
        problems = _problems(w)
        assert not problems, problems


# ---- f. valid JSON that must be quarantined, never crash -----------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_f_valid_json_the_schema_cannot_hold_is_quarantined(kind):
    # in a process of its own, 2 GiB of address space and a minute: a merge that writes
    # 1E+999999999 out in full needs gigabytes
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
        "from tests.integration.merge_interleavings import main; "
        f"sys.exit(main(['badinput', '--kind', {kind!r}]))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=90
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind}: the case did not finish within 90 s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{kind}: exit {done.returncode}\n{done.stderr[-2000:]}"
    problems = json.loads(lines[-1].removeprefix("RESULT "))
    assert not problems, "\n".join(problems)


# ---- g. a duplicate after the version was deleted, S3 answering 403 -------------------------


def test_g_duplicate_after_the_version_is_gone_with_403_for_missing_versions_succeeds():
    with World(seed="g") as w:
        _merge(w, _put(w, 0, "baseline", [staff(1, 0, "k1v1")]), "i1")
        update = _put(w, 1, "staging", [staff(1, 10, "k1v2")])
        _merge(w, update, "i2")
        assert not w.version_exists(update.key, update.version_id)
        before = w.snapshot()
        duplicate = w.message(update.body, "f1 dup")
        inv = Invocation("dup", deny_missing_versions=True)
        outcome = w.invoke([duplicate], inv)
        errors = [line for line in w.log if "error:" in line][:2]
        assert not outcome.failed, f"the duplicate failed (it would retry into the DLQ): {errors}"
        assert w.snapshot() == before
        problems = _problems(w)
        assert not problems, problems


@pytest.mark.parametrize(
    ("plan", "fault"),
    [
        # the manifest's If-Match write succeeds, its answer is lost, botocore's retry gets 412:
        # the partition it replaced must still be retired then, not by a later replay
        ("generated-1-3", "lost:i2:c6"),
        # a replay after a layout switch must not move the rows (a no-op moves nothing)
        ("observation", "switch:i2:c15:after"),
    ],
)
def test_cases_the_full_sweep_found(plan, fault):
    result = mi.run_case(
        mi.plan_named(plan, 1), mi.Fault.parse(fault), replays=None, staging_only=False
    )
    assert not result.violations, result.report(verbose=False)
