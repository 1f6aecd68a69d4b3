"""The jobs store on a real database: atomic claims, leases and take-overs, state transitions, paging.

Runs on a SQLite file, and on PostgreSQL too when TUNEFORGE_TEST_POSTGRES names a database URL whose tables
the test may drop (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/tfjobs)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tuneforge.jobs.store import MAX_RESTARTS, InvalidState, Store

PG = os.environ.get("TUNEFORGE_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'tuneforge.db'}")
    if not PG:
        pytest.skip("set TUNEFORGE_TEST_POSTGRES=postgresql+psycopg://... to run on PostgreSQL")
    from tuneforge.db import TableBase, connect

    engine = connect(PG)
    TableBase.metadata.drop_all(engine)
    TableBase.metadata.create_all(engine)
    return Store(PG)


def _job(store: Store, queued: bool = True) -> str:
    job = store.create_job(model="m", base="m", training_file="file-x", validation_file=None, suffix=None, seed=1,
                           user_metadata=None, hyperparameters={"n_epochs": "auto"}, options={})
    if queued:
        assert store.validated(job.id, 10)
    return job.id


def test_racing_workers_each_take_a_different_job(store):
    ids = {_job(store) for _ in range(12)}
    claims: list[tuple[str, str]] = []
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        while (job := store.claim_next(name, lease_seconds=60)) is not None:
            claims.append((job.id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in claims) == sorted(ids)  # every job claimed exactly once
    for job_id, name in claims:
        job = store.get_job(job_id)
        assert job.status == "running" and job.worker_id == name


def test_an_expired_lease_is_taken_over_and_the_old_worker_told(store):
    job_id = _job(store)
    assert store.claim_next("a", lease_seconds=0.3).id == job_id
    assert store.claim_next("b", lease_seconds=60) is None  # a's lease is live
    assert store.heartbeat(job_id, "a", 0.3)
    time.sleep(0.4)
    taken = store.claim_next("b", lease_seconds=60)
    assert taken.id == job_id and taken.worker_id == "b" and taken.restarts == 1
    assert not store.heartbeat(job_id, "a", 60)  # a learns it lost the job
    assert store.control(job_id) == ("running", "b")
    assert not store.succeed(job_id, "a", fine_tuned_model="x")  # and cannot finish it
    assert any(e.level == "warn" and "takes the job over" in e.message
               for e in store.list_events(job_id, after=None, limit=50).rows)


def test_a_job_whose_worker_keeps_dying_fails_with_worker_lost(store):
    job_id = _job(store)
    store.claim_next("w0", lease_seconds=0.01)
    for i in range(MAX_RESTARTS):
        time.sleep(0.02)
        assert store.claim_next(f"w{i + 1}", lease_seconds=0.01).id == job_id
    time.sleep(0.02)
    assert store.claim_next("last", lease_seconds=60) is None
    job = store.get_job(job_id)
    assert job.status == "failed" and job.error["code"] == "worker_lost" and job.worker_id is None


def test_transitions_allow_only_what_the_state_permits(store):
    a = _job(store, queued=False)
    assert store.claim_next("w", 60) is None  # validating_files is not claimable
    with pytest.raises(InvalidState):
        store.pause(a)  # only a running job pauses
    assert store.cancel(a).status == "cancelled"
    with pytest.raises(InvalidState, match="cancelled: cannot cancel"):
        store.cancel(a)
    with pytest.raises(KeyError):
        store.cancel("ftjob-missing")

    b = _job(store)
    store.claim_next("w", 60)
    assert store.pause(b).status == "paused"
    assert store.claim_next("v", 60) is None  # paused is not claimable
    with pytest.raises(InvalidState):
        store.resume(a)
    assert store.resume(b).status == "queued"
    assert store.claim_next("v", 60) is None  # w has not let go yet: nobody else may write into the run
    store.release(b, "w")
    assert store.claim_next("v", 60).id == b

    c = _job(store)
    store.claim_next("w", 60)
    store.cancel(c)
    assert not store.succeed(c, "w", fine_tuned_model="ft:x")  # cancelled meanwhile: stays cancelled
    assert store.get_job(c).status == "cancelled"


def test_release_on_shutdown_requeues_a_running_job(store):
    job_id = _job(store)
    store.claim_next("w", 60)
    store.release(job_id, "w", requeue=True)
    job = store.get_job(job_id)
    assert job.status == "queued" and job.worker_id is None
    assert store.claim_next("v", 60).id == job_id


def test_paging_newest_first_with_a_cursor(store):
    ids = [_job(store) for _ in range(5)]
    first = store.list_jobs(after=None, limit=2)
    assert [j.id for j in first.rows] == ids[::-1][:2] and first.has_more
    rest = store.list_jobs(after=first.rows[-1].id, limit=3)
    assert [j.id for j in rest.rows] == ids[::-1][2:] and not rest.has_more
    with pytest.raises(KeyError):
        store.list_jobs(after="ftjob-nope", limit=2)
