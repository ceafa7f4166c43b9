"""PostgreSQL's write-ahead log as the benchmarks meet it: its segments made ready before a
run, and what a loaded window wrote to it.

Every commit the router waits for (a settle, a reservation's disk flush) waits for the WAL.
A server that has not yet reached its steady state, a freshly started one like this
machine's at the start of a session, has no spent segments to reuse: each time the log
crosses into a new 16 MB segment, PostgreSQL creates the file and writes it full of zeros
(``wal_init_zero``) while every commit waits. Under the benchmarks' load that was one stall
of the whole router every 2.2 s, 50-75 ms over its median latency, all 64 requests in flight
at once: half of ``stalls.py``'s p99 / p50 on one wallet (2.02, against 1.52-1.55 once the
segments were reused). A server in its steady state renames the segments a checkpoint has
finished with instead, up to ``max_wal_size``; ``ready_segments`` brings this one there
before a run, so that the benchmarks measure the router, not the server's first minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

SEGMENT_NAME = "^[0-9A-F]{24}$"  # a WAL segment's file in pg_wal (not .history, not .partial)


@dataclass(frozen=True)
class WalMark:
    """Where the log stood at one moment: its insert position, and its segment files."""

    lsn: int
    files: int


def segments_ahead(conn: psycopg.Connection) -> int:
    """Segment files after the one being written: spent ones, renamed ready for reuse."""
    row = conn.execute(
        "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ %s"
        " AND name > pg_walfile_name(pg_current_wal_insert_lsn())", (SEGMENT_NAME,)).fetchone()
    return int(row[0]) if row else 0


def ready_segments(conn: psycopg.Connection, want: int = 32) -> str:
    """Give the server about ``want`` segments ready for reuse (at least half as many are
    left alone), as in its steady state.

    Switching segments ``want`` times makes it create them (a logical message gives each
    switch something to end); the checkpoint after finishes with them, and renames them
    ahead of the insert position: as many as its estimate of the log written between
    checkpoints asks for, which those switches have just raised, up to ``max_wal_size``.
    ``conn`` must be a superuser's, in autocommit. What it found and did, in words.
    """
    try:
        before = segments_ahead(conn)
    except psycopg.errors.InsufficientPrivilege:
        return "WAL: segments not checked (pg_ls_waldir needs a superuser or pg_monitor)"
    if before >= want // 2:  # a server in its steady state: its checkpoints keep them coming
        return f"WAL: {before} segments ready for reuse"
    for _ in range(want):
        conn.execute("SELECT pg_logical_emit_message(false, 'binom_bench', 'segment')")
        conn.execute("SELECT pg_switch_wal()")
    conn.execute("CHECKPOINT")
    return (f"WAL: {before} segments ready for reuse; {want} switched through and a "
            f"checkpoint: {segments_ahead(conn)} ready")


def wal_mark(conn: psycopg.Connection) -> WalMark:
    row = conn.execute(
        "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn,"
        " (SELECT count(*) FROM pg_ls_waldir() WHERE name ~ %s)", (SEGMENT_NAME,)).fetchone()
    assert row is not None
    return WalMark(lsn=int(row[0]), files=int(row[1]))


def segment_bytes(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
                       ).fetchone()
    return int(row[0]) if row else 16 << 20


def written_between(start: WalMark, end: WalMark, segment: int) -> dict[str, int]:
    """What the log took between two marks: bytes, segments crossed, and segment files
    created rather than reused (the stalls)."""
    return {"bytes": end.lsn - start.lsn,
            "segments crossed": end.lsn // segment - start.lsn // segment,
            "segment files added": max(0, end.files - start.files)}
