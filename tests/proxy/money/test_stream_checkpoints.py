"""A running stream's checkpoints (``proxy.money.checkpoints``): what it has delivered goes
to the process's spool as it goes, its lines go once it is charged, and a replay charges a
hold by its last line. ``tests/proxy/test_stream_checkpoint_processes.py`` kills a real
process mid-stream."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from django.utils import timezone

from billing.models import Hold, UsageRecord, Wallet
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import hold_reserve
from proxy.money import spool
from proxy.money.spool import Resolution, charge_spool, replay_orphaned_spools
from tests.live_router import wait_for_charges
from tests.loop_thread import LoopThread
from tests.proxy.upstream import UpstreamServer
from tests.router_processes import until
from tests.wallet_ids import wallet_id_of

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 100}


@pytest.fixture
def spool_dir(settings, tmp_path) -> Path:
    settings.ROUTER_CHARGE_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


def _lines(directory: Path) -> list[dict]:
    if not directory.is_dir():
        return []
    return [orjson.loads(line) for path in sorted(directory.glob("charges-*.jsonl"))
            for line in path.read_bytes().splitlines() if line.strip()]


def test_a_running_stream_spools_what_it_delivered_and_its_lines_go_once_it_is_charged(
    openai_worker, upstream: UpstreamServer, make_key, client_for, spool_dir, settings
):
    settings.ROUTER_STREAM_CHECKPOINT_MS = 100
    upstream.configure(reply=" ".join(["word"] * 40), chunk_delay=0.05)  # 2 s
    user_id, secret = make_key()
    received: list[str] = []
    checkpoints: list[dict] = []

    def read() -> None:
        for chunk in client_for(secret).chat.completions.create(**BODY, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                if len(received) == 20:  # half-way: what the spool says by now
                    checkpoints.extend(until("a checkpoint",
                                              lambda: _lines(spool_dir), seconds=5))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(30)
    assert len(received) == 40
    hold = Hold.objects.get()
    line = checkpoints[-1]
    assert line["hold_id"] == hold.id
    assert line["usage"]["status"] == "cancelled"  # charged as a stream cut there
    assert line["usage"]["source"] == "estimated"
    # Delivered by then, no more (one word may be on its way to the client).
    assert 0 < line["usage"]["completion_tokens"] <= 21
    assert line["cost_micros"] == (line["usage"]["prompt_tokens"]
                                   + 2 * line["usage"]["completion_tokens"])
    assert line["created_at"] is not None  # the hold's partition
    wait_for_charges()
    record = UsageRecord.objects.get(request_id=hold.id)
    assert (record.status, record.completion_tokens) == ("ok", 40)
    # Charged by its own settlement: the lines are forgotten and the file is gone.
    until("the spool file gone", lambda: not list(spool_dir.glob("charges-*.jsonl")))
    wallet = Wallet.objects.get(user_id=user_id)
    assert wallet.pending_micros == 0
    assert wallet.posted_micros == 1_000_000 - record.cost_micros


def test_no_checkpoint_is_written_when_they_are_off(
    openai_worker, upstream: UpstreamServer, make_key, client_for, spool_dir, settings
):
    settings.ROUTER_STREAM_CHECKPOINT_MS = 0
    # 2 s: on, it would have written one every 0.1 s.
    upstream.configure(reply=" ".join(["word"] * 40), chunk_delay=0.05)
    _, secret = make_key()
    seen: list[list[dict]] = []
    for _chunk in client_for(secret).chat.completions.create(**BODY, stream=True):
        seen.append(_lines(spool_dir))
    wait_for_charges()
    assert len(seen) > 40
    assert not any(seen)
    assert UsageRecord.objects.get().completion_tokens == 40


@pytest.fixture
def loop():
    loop = LoopThread()
    yield loop
    loop.close()


def _usage(completion: int) -> UsageReport:
    return UsageReport(prompt_tokens=10, completion_tokens=completion, worker="w",
                       status="cancelled", source="estimated", estimate_reason="incomplete")


def test_a_replay_charges_each_hold_by_its_last_line(
    loop, user, price, spool_dir, transactional_db
):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="fund", memo="t",
                  kind="topup")
    wallet_id = wallet_id_of(user)
    for hold_id in ("req-a", "req-b"):
        loop.run(hold_reserve(wallet_id=wallet_id, hold_id=hold_id, amount_micros=1_000,
                              price_id=price.pk, model=price.model, api_key_id=None,
                              expires_at=_in_an_hour()))
    mine = charge_spool()
    # Two checkpoints of a, one of b, then a's later one: the last of each counts.
    assert mine.add_many([Resolution("req-a", 30, _usage(10)),
                          Resolution("req-b", 50, _usage(20))])
    assert mine.add_many([Resolution("req-a", 70, _usage(30))])
    mine.close()  # the process dies: its lines stay for the next one
    result = loop.run(replay_orphaned_spools())
    assert (result.files, result.written, result.failed) == (1, 2, 0)
    charged = dict(UsageRecord.objects.values_list("request_id", "cost_micros"))
    assert charged == {"req-a": 70, "req-b": 50}
    assert UsageRecord.objects.get(request_id="req-a").completion_tokens == 30
    assert set(Hold.objects.values_list("status", flat=True)) == {"posted"}
    wallet = Wallet.objects.get(pk=wallet_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - 120, 0)
    assert not list(spool_dir.glob("charges-*.jsonl"))


def _in_an_hour() -> datetime:
    return timezone.now() + timedelta(hours=1)


def test_a_file_grown_with_checkpoints_is_written_afresh_with_the_last_lines(
    spool_dir, monkeypatch
):
    monkeypatch.setattr(spool, "COMPACT_AT", 2_000)
    monkeypatch.setattr(spool, "LINE_ROOM", 100)
    mine = charge_spool()
    sizes, paths = [], set()
    for completion in range(1, 200):
        assert mine.add_many([Resolution("req-a", completion, _usage(completion)),
                              Resolution("req-b", 1, _usage(1))])
        assert mine.path is not None
        paths.add(mine.path)
        sizes.append(mine.path.stat().st_size)
    assert len(paths) > 1  # written afresh, more than once
    assert max(sizes) < 2_000 + 2 * 100 + 2 * 1_000  # never far past its bound
    files = list(spool_dir.glob("charges-*.jsonl"))
    assert files == [mine.path]  # the old ones gone
    last = {line["hold_id"]: line["cost_micros"] for line in _lines(spool_dir)}
    assert last == {"req-a": 199, "req-b": 1}
    mine.landed("req-a")
    mine.landed("req-b")
    assert not list(spool_dir.glob("charges-*.jsonl"))
