"""No request line stops the backend (issue 15 D3, D12): unhashable types, deep nesting, NaN and
Infinity, wrong versions, ids with newlines, overlong lines. Each malformed line gets one
``error`` event and the server still answers ``hello`` after it. Seeded and bounded: a few
seconds in CI."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fitter_backend.errors import FacecapError
from fitter_backend.server import protocol
from fitter_backend.server.server import Server

REPO = Path(__file__).resolve().parents[1]
HELLO = json.dumps({"protocol": 1, "type": "hello"})
VALID = [
    {"protocol": 1, "type": "hello"},
    {"protocol": 1, "type": "cancel", "job": "a"},
    {"protocol": 1, "type": "fit", "job": "a", "head": "open", "mode": "offline", "out": "/nonexistent/x",
     "source": {"kind": "synthetic", "frames": 3, "seed": 0}},
    {"protocol": 1, "type": "fit", "job": "b", "head": "open", "mode": "realtime", "out": "/nonexistent/y",
     "device": "gpu", "landmarks": "dense", "pupil_distance_mm": 63.0,
     "source": {"kind": "video", "paths": ["/nonexistent/a.mp4"], "frame_start": 0, "frame_end": 3,
                "cameras": [{"matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                             "focal_px": 900.0}]}},
]


def odd_value(rng: random.Random, depth: int = 0):
    """A JSON value of any type, including the awkward ones."""
    choices = [None, True, False, 0, 1, -1, 1.0, 2 ** 70, -1e308, 1e-300, "", "hello", "fit", "video", "a\n",
               "\udcff", "x" * 300, [], {}, ["hello"], {"kind": ["video"]}, {"": None}]
    if depth < 3 and rng.random() < 0.3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randint(0, 3))] if rng.random() < 0.5 else \
            {rng.choice(["kind", "type", "job", "paths", "x"]): odd_value(rng, depth + 1) for _ in range(2)}
    return rng.choice(choices)


def mutate(rng: random.Random, message):
    """A copy of ``message`` with one field, somewhere inside, replaced, removed or added."""
    message = json.loads(json.dumps(message))
    node = message
    while isinstance(node, (dict, list)) and node and rng.random() < 0.6:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            break
        node = node[key]
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        action = rng.random()
        if action < 0.7:
            node[key] = odd_value(rng)
        elif action < 0.85:
            del node[key]
        else:
            node[rng.choice(["extra", "job", "type"])] = odd_value(rng)
    elif isinstance(node, list) and node:
        node[rng.randrange(len(node))] = odd_value(rng)
    return message


def malformed_lines(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    special = ['{"protocol":1,"type":["hello"]}', '{"protocol":1,"type":{}}', '{"protocol":true,"type":"hello"}',
               '{"protocol":1.0,"type":"hello"}', '{"protocol":1,"type":"cancel","job":"abc\\n"}',
               '{"protocol":1,"type":"fit","job":"a","source":{"kind":["video"]}}',
               "[" * 50_000 + "]" * 50_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "NaN", "Infinity",
               '{"protocol":1,"type":"fit","job":"a","head":"open","mode":"offline","out":"/x",'
               '"source":{"kind":"video","paths":["a"],"frame_start":0,"frame_end":1,'
               '"cameras":[{"matrix_world":null,"focal_px":Infinity}]}}',
               '"' + "\u00e9" * (protocol.MAX_LINE_BYTES // 2 + 10) + '"', "\x00\x01", "{", "", "null", "[]"]
    lines = list(special)
    while len(lines) < count:
        kind = rng.random()
        if kind < 0.8:
            lines.append(json.dumps(mutate(rng, rng.choice(VALID))))
        elif kind < 0.9:  # cut or flipped text
            text = json.dumps(rng.choice(VALID))
            cut = rng.randrange(len(text))
            lines.append(text[:cut] + rng.choice(["", "\\", '"', "}", "\udcff", "\u2028"]) + text[cut + 1:])
        else:
            lines.append(json.dumps(odd_value(rng)))
    return lines


def refuse_job(request, report, models, cancelled):
    """The fuzz is about the protocol: a request that happens to be a valid fit runs no job."""
    raise FacecapError(f"fuzz: job {request['job']} not run")


def test_thousands_of_malformed_lines_each_get_an_answer_and_hello_still_works():
    events = []
    server = Server(lambda line: events.append(protocol.parse_event(protocol.decode_line(line))), run_job=refuse_job)
    try:
        for line in malformed_lines(3000, seed=15):
            del events[:]
            if line.strip():
                try:
                    if protocol.parse_request(protocol.decode_line(line))["type"] == "shutdown":
                        continue
                except protocol.ProtocolError:
                    pass
            assert server.handle_line(line) is True
            assert server.handle_line(HELLO) is True
            assert events and events[-1]["type"] == "hello", (line[:200], events[-3:])
    finally:
        server.stop()


@pytest.mark.parametrize("line, error", [
    ('{"protocol":1,"type":["hello"]}', "type: unknown request type ['hello']"),
    ('{"protocol":1,"type":{}}', "type: unknown request type {}"),
    ('{"protocol":1,"type":"fit","job":"a","head":"open","mode":"offline","out":"/x",'
     '"source":{"kind":["video"]}}', "fit.source.kind: expected one of"),
    ("[" * 50_000 + "]" * 50_000, "line is nested too deeply"),
    ('{"protocol":true,"type":"hello"}', "protocol: this side speaks version 1, got True"),
    ('{"protocol":1.0,"type":"hello"}', "protocol: this side speaks version 1, got 1.0"),
    ('{"protocol":1,"type":"cancel","job":"abc\\n"}', "cancel.job: 'abc\\n' is not a job id"),
    ('{"protocol":1,"type":"fit","job":"a","head":"open","mode":"offline","out":"/x","source":{"kind":"video",'
     '"paths":["a"],"frame_start":0,"frame_end":1,"cameras":[{"matrix_world":null,"focal_px":Infinity}]}}',
     "line is not JSON (Infinity is not a JSON number)"),
    ('{"protocol":1,"type":"fit","job":"a","head":"open","mode":"offline","out":"/x",'
     '"source":{"kind":"synthetic","frames":30000,"seed":0}}', "fit.source.frames: 30000 is outside [2, 1000]"),
    ('"' + "\u00e9" * (protocol.MAX_LINE_BYTES // 2 + 10) + '"', "line of 1048598 bytes is longer than the limit"),
])
def test_each_class_of_bad_line_is_named(line, error):
    with pytest.raises(protocol.ProtocolError) as raised:
        protocol.parse_request(protocol.decode_line(line))
    assert str(raised.value).startswith(error), str(raised.value)


def test_the_real_process_survives_a_malformed_stream_and_an_endless_line():
    """The process reads bytes with a bounded buffer: a line of 3 MiB is refused in pieces,
    not held whole; every malformed line is answered and the last hello still is."""
    lines = malformed_lines(300, seed=16)
    stream = b"".join(line.encode("utf-8", "surrogatepass") + b"\n"
                      for line in lines if line.strip())
    stream += b"[" * (3 << 20) + b"\n" + HELLO.encode() + b"\n"
    run = subprocess.run([sys.executable, "-m", "fitter_backend.server"], input=stream, capture_output=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-800:]
    events = [protocol.parse_event(protocol.decode_line(line)) for line in run.stdout.splitlines()]
    # a mutated line may be a valid fit (of missing files): its job's end may come after the hello
    too_long = [k for k, e in enumerate(events) if "longer than the limit" in e.get("message", "")]
    hellos = [k for k, e in enumerate(events) if e["type"] == "hello"]
    assert too_long and hellos and hellos[-1] > too_long[-1]
    assert run.stderr.count(b"Traceback") == 0, run.stderr[-800:]


def test_a_duplicate_fit_for_the_running_job_does_not_look_like_that_job_ending():
    import threading
    release = threading.Event()
    events = []

    def slow_job(request, report, models, cancelled):
        release.wait(30)
        raise FacecapError("stopped")

    server = Server(lambda line: events.append(protocol.parse_event(protocol.decode_line(line))), run_job=slow_job)
    first = dict(VALID[2])
    try:
        server.handle_line(json.dumps(first))
        server.handle_line(json.dumps(first))
        refused = [e for e in events if e["type"] == "error"]
        assert len(refused) == 1 and "still running" in refused[0]["message"] and "job" not in refused[0]
    finally:
        release.set()
        server.stop()
