#!/usr/bin/env python3
"""Verifies a `toolgate ledger export` archive without toolgate (Python 3 standard library only).

Usage: verify-ledger-export.py FILE.jsonl   (or - for standard input)

For every line (one execution or one audit day) it recomputes each event's hash from the line alone,
checks the links and the sequence, and checks that the chain reaches the event its anchor names (the
execution record's last_seq/last_hash, the audit day's head): a removed tail is caught. One trailing
event beyond the anchor is reported, not failed (a crash between the event's write and the anchor's).
Exit 0 when every chain passes, 1 naming the first that does not, 2 on unreadable input.

The hash, as toolgate computes it: lowercase hex SHA-256 of prev_hash (hex, "" for the first event)
followed by the canonical JSON of {"actor", "at", "data", "seq", "type"}: UTF-8, no whitespace, object
keys sorted at every level, strings escaped only for '"', '\\' and U+0000..U+001F, integers in decimal,
other numbers as the shortest text that reads back as the same double. Python's json.dumps with
sort_keys=True, separators=(",", ":") and ensure_ascii=False writes exactly that.
"""
import hashlib
import json
import sys


def canonical(event):
    body = {k: event[k] for k in ("actor", "at", "data", "seq", "type")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_chain(events, last_seq, last_hash):
    """Returns (problem or None, pending tail?)."""
    prev = ""
    for i, e in enumerate(events):
        if e["seq"] != i + 1:
            return f"event {i + 1} is missing (found seq {e['seq']})", False
        if e.get("prev_hash", "") != prev:
            return f"event {e['seq']} ({e['type']}) does not link to event {e['seq'] - 1}", False
        digest = hashlib.sha256((prev + canonical(e)).encode("utf-8")).hexdigest()
        if digest != e["hash"]:
            return f"event {e['seq']} ({e['type']}) was altered: its hash does not match", False
        prev = e["hash"]
    n = len(events)
    if last_seq is None:
        return ("its anchor is missing" if n else None), False
    if n + 1 == last_seq:
        return f"event {last_seq}, the last its anchor names, is missing", False
    if n < last_seq:
        return f"events {n + 1}..{last_seq} are missing: its anchor names event {last_seq} as the last", False
    if last_seq < 1 or events[last_seq - 1]["hash"] != last_hash:
        return f"event {last_seq} does not match the hash its anchor holds", False
    if n > last_seq + 1:
        return f"events {last_seq + 1}..{n} are not covered by its anchor", False
    return None, n == last_seq + 1


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    source = sys.stdin if argv[1] == "-" else open(argv[1], encoding="utf-8")
    counts = {"execution": 0, "audit": 0, "events": 0, "pending": 0}
    for number, text in enumerate(source, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            kind = line["kind"]
            events = line["events"]
            if kind == "execution":
                record = line["record"]
                name = f"execution {record['execution_id']}"
                anchor = (record.get("last_seq"), record.get("last_hash", ""))
            elif kind == "audit":
                name = f"audit day {line['day']}"
                head = line.get("head")
                anchor = (head["last_seq"], head["last_hash"]) if head else (None, "")
            else:
                raise KeyError(f"unknown kind {kind!r}")
            problem, pending = check_chain(events, *anchor)
        except (ValueError, KeyError, TypeError) as err:
            print(f"line {number}: not a ledger export line: {err}", file=sys.stderr)
            return 2
        if problem:
            print(f"FAILED: {name}: {problem}")
            return 1
        if pending:
            counts["pending"] += 1
            print(f"note: {name}: its last event is not anchored yet")
        counts[kind] += 1
        counts["events"] += len(events)
    print(f"ok: {counts['execution']} executions, {counts['audit']} audit days, {counts['events']} events"
          + (f", {counts['pending']} with one event not anchored yet" if counts["pending"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
