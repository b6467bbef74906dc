"""Fuzzing the dataset loader: mutated data files load correctly or raise DataError, nothing else.

    python -m benchmarks.fuzz_loader                        # 2,000 cases, seed 0
    python -m benchmarks.fuzz_loader --iterations 300 --seed 7 --keep runs/bench/fuzz

Each case writes a valid file (JSON lines, a JSON list, CSV or Parquet) of random rows in a format
the loader reads (prompt, messages, prompt + completion, text, or a `question` column for a
template), applies one to three mutations, then loads it with a random `data` section through
`load_prompt_dataset` and `load_sft_dataset` and renders and tokenises what loaded
(`encode_prompts`, `encode_sft`, the tiny tokenizer).

Mutations. Bytes: bit flips, truncation, invalid UTF-8, NUL bytes, a byte-order mark, a span
deleted or repeated, an empty or blank file, an unpaired surrogate escape (`\\ud800`). Records: a
value of the wrong type, a message without role or content, a renamed or missing column, an empty
prompt, a huge field (up to 1 MB), JSON nested 100,000 deep, a row that is not an object, mixed
chat and plain rows, a duplicated CSV column, a field with a newline in a CSV.

A finding is: an exception that is not a DataError; a loaded row breaking the loader's contract
(an empty prompt, a message without string role and content, an SFT row without completion);
rows lost without a word (a file whose bytes were not mutated that loads with fewer rows than
written, or prompts dropped by `long_prompts: skip` without a warning counting them). Findings are
printed with the case number (rerun one with --only N) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

FORMATS = ("jsonl", "json", "csv", "parquet")
SHAPES = ("prompt", "messages", "prompt_completion", "text", "question")
WEIRD_VALUES = [0, 1.5, True, None, [], {}, [1, 2], {"role": "user"}, [{"role": 1, "content": "x"}],
                [{"content": "x"}], [{"role": "user", "content": None}], "", "   ", "x", float("nan"), 10 ** 30,
                [[{"role": "user", "content": "x"}]], [{"role": "assistant", "content": "only"}]]


# ----------------------------------------------------------------------------------- the rows
def _text(rng: random.Random, k: int = 12) -> str:
    alphabet = "abc 0123456789+=?\n\t\"',{}[]\\é中🙂"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, k))).strip() or "x"


def make_rows(rng: random.Random, shape: str, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        row: dict = {"answer": str(rng.randint(0, 99)), "extra": rng.choice([1, "e", 2.5])}
        if shape == "prompt":
            row["prompt"] = _text(rng)
        elif shape == "messages":
            row["messages"] = [{"role": "user", "content": _text(rng)}] + \
                ([{"role": "assistant", "content": _text(rng)}] if rng.random() < 0.5 else [])
        elif shape == "prompt_completion":
            row["prompt"], row["completion"] = _text(rng), _text(rng)
        elif shape == "text":
            row["text"] = _text(rng, 30)
        else:
            row["question"] = _text(rng)
        rows.append(row)
    return rows


def mutate_records(rng: random.Random, rows: list[dict], fmt: str) -> tuple[list, str]:
    """One record-level mutation; `rows` may gain non-dict entries. Returns (rows, its name)."""
    kind = rng.choice(["wrong_type", "bad_message", "rename_column", "drop_column", "empty_prompt", "huge_field",
                       "deep_nesting", "not_an_object", "mixed_chat_plain", "newline_in_field"])
    objects = [k for k, r in enumerate(rows) if isinstance(r, dict) and r]
    if not objects:
        return rows, "none"
    i = rng.choice(objects)
    row = rows[i]
    keys = list(row)
    if kind == "wrong_type":
        row[rng.choice(keys)] = rng.choice(WEIRD_VALUES)
    elif kind == "bad_message":
        row[rng.choice(["messages", "prompt", "completion"])] = [rng.choice([{"role": "user"}, {"content": "x"},
                                                                            {"role": None, "content": "x"}, "text"])]
    elif kind == "rename_column":
        key = rng.choice(keys)
        row[key + "_"] = row.pop(key)
    elif kind == "drop_column":
        for r in rows:
            if isinstance(r, dict):
                r.pop(keys[0], None)
    elif kind == "empty_prompt":
        row[keys[-1]] = rng.choice(["", " \n ", [], [{"role": "user", "content": " "}]])
    elif kind == "huge_field":
        row[rng.choice(keys)] = "7" * rng.choice([10_000, 300_000, 1_000_000])
    elif kind == "deep_nesting":
        row["extra"] = "DEEP"  # replaced by raw text after serialising (json formats)
    elif kind == "not_an_object":
        rows[i] = rng.choice([5, "row", [1, 2], None])
    elif kind == "mixed_chat_plain":
        for r in [r for r in rows if isinstance(r, dict)][: len(rows) // 2 + 1]:
            if "prompt" in r:
                r["prompt"] = [{"role": "user", "content": str(r["prompt"])}]
            elif "messages" in r:
                r["prompt"] = "plain"
    else:
        row[keys[-1]] = "line one\nline two, with \"quotes\""
    return rows, kind


# -------------------------------------------------------------------------------- the files
def serialise(rows: list, fmt: str) -> tuple[bytes, str]:
    """The file's bytes; rows pyarrow cannot write (mixed types, non-objects) fall back to JSON lines."""
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif fmt == "json":
        text = json.dumps(rows, ensure_ascii=False)
    elif fmt == "csv":
        if not all(isinstance(r, dict) for r in rows):
            return serialise(rows, "jsonl")
        names = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v if isinstance(v, str) else json.dumps(v)) for k, v in r.items()}
                         for r in rows)
        text = buf.getvalue()
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pylist(rows)
            out = io.BytesIO()
            pq.write_table(table, out)
            return out.getvalue(), "parquet"
        except Exception:  # noqa: BLE001 - anything pyarrow refuses becomes a JSON lines case
            return serialise(rows, "jsonl")
    text = text.replace('"DEEP"', "[" * 100_000 + "]" * 100_000)
    return text.encode("utf-8", errors="surrogatepass"), fmt


def mutate_bytes(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "truncate", "invalid_utf8", "nul", "bom", "delete_span", "repeat_span", "empty",
                       "surrogate_escape", "duplicate_csv_column"])
    b = bytearray(data)
    n = max(len(b), 1)
    if kind == "flip" and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(n)]
    elif kind == "invalid_utf8":
        at = rng.randrange(n)
        b[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80"])
    elif kind == "nul":
        at = rng.randrange(n)
        b[at:at] = b"\x00" * rng.randint(1, 4)
    elif kind == "bom":
        b = bytearray(b"\xef\xbb\xbf") + b
    elif kind in ("delete_span", "repeat_span") and b:
        lo = rng.randrange(len(b))
        hi = min(len(b), lo + rng.randint(1, 64))
        b[lo:hi] = b"" if kind == "delete_span" else b[lo:hi] * 2
    elif kind == "empty":
        b = bytearray(rng.choice([b"", b"\n\n", b"   "]))
    elif kind == "surrogate_escape" and fmt in ("jsonl", "json"):
        b = bytearray(bytes(b).replace(b'": "', b'": "\\ud800', 1))
    elif kind == "duplicate_csv_column" and fmt == "csv":
        lines = bytes(b).split(b"\n")
        lines[0] += b"," + lines[0].split(b",")[0]
        b = bytearray(b"\n".join(line + b",dup" if k and line else line for k, line in enumerate(lines)))
    return bytes(b), kind


def data_section(rng: random.Random, source: str, shape: str):
    from postrl.config import Columns, DataSection

    template = None
    if shape == "question" or rng.random() < 0.1:
        good = ["{question}", "{question}?", "{{literal}} {question}", "{answer}"]
        bad = ["{prompt}!", "{q[0]}", "{0}", "{question:d}", "{question.real}", "{", "{extra[0]}"]
        template = rng.choice(good if rng.random() < 0.7 else bad)
    return DataSection(
        source=source, prompt_template=template,
        columns=Columns(prompt=rng.choice(["prompt"] * 9 + ["promt"])),
        answer_pattern=rng.choice([None] * 6 + [r"(\d+)", r"####\s*(.+)", "(", r"\d+"]),
        system_prompt=rng.choice([None, "Be brief."]), limit=rng.choice([None, None, 1, 3]),
        max_prompt_tokens=rng.choice([1024, 1024, 8]), long_prompts=rng.choice(["error", "skip"]),
        chat_template=rng.choice(["auto", "always", "never"]))


# ---------------------------------------------------------------------------------- oracles
def check_prompt_rows(rows, cfg) -> str | None:
    kinds = {isinstance(r.prompt, list) for r in rows}
    if len(kinds) > 1:
        return "chat and plain-text prompts loaded into one dataset"
    for r in rows:
        p = r.prompt
        if isinstance(p, str):
            if not p.strip():
                return f"row {r.index + 1}: empty prompt loaded"
        elif not (isinstance(p, list) and p and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                   and isinstance(m.get("content"), str) for m in p)):
            return f"row {r.index + 1}: malformed prompt loaded: {p!r:.80}"
    return None


def check_sft_rows(rows) -> str | None:
    if len({isinstance(r.prompt, list) for r in rows if r.prompt != ""}) > 1:
        return "chat and plain-text prompts loaded into one SFT dataset"
    for r in rows:
        if not isinstance(r.completion, str) or not r.completion.strip():
            return f"row {r.index + 1}: SFT row without completion"
    return None


def run_case(case: int, seed: int, tmp: Path, tok) -> tuple[list[str], str]:
    """(outcomes, detail): per loader "prompt: loaded" / "prompt: DataError", or one "...: finding"."""
    from postrl.data.chat import encode_prompts, encode_sft
    from postrl.data.loading import DataError, load_prompt_dataset, load_sft_dataset

    rng = random.Random(seed * 1_000_003 + case)
    fmt, shape = rng.choice(FORMATS), rng.choice(SHAPES)
    rows = make_rows(rng, shape, rng.randint(1, 6))
    names = []
    for _ in range(rng.randint(0, 2)):
        rows, name = mutate_records(rng, rows, fmt)
        names.append(name)
    data, fmt = serialise(rows, fmt)
    bytes_mutated = False
    if rng.random() < (0.9 if not names else 0.4):  # some cases stay valid: they must load whole
        data, name = mutate_bytes(rng, data, fmt)
        names.append(name)
        bytes_mutated = True
    path = tmp / f"case{case}.{fmt}"
    path.write_bytes(data)
    cfg = data_section(rng, str(path), shape)
    label = f"case {case} ({fmt}, {shape}, {'+'.join(names) or 'no mutation'})"
    outcomes = []
    for loader in ("prompt", "sft"):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if loader == "prompt":
                    loaded = load_prompt_dataset(cfg)
                    problem = check_prompt_rows(loaded, cfg)
                    written = sum(isinstance(r, dict) for r in rows)
                    if problem is None and not bytes_mutated and cfg.limit is None and len(loaded) != written:
                        problem = f"{written} rows written, {len(loaded)} loaded"
                    if problem is None:
                        ids, kept = encode_prompts(tok, loaded, cfg)
                        dropped = len(loaded) - len(kept)
                        if dropped and not any(f"{dropped} of {len(loaded)}" in str(w.message) for w in caught):
                            problem = f"{dropped} prompts dropped without a warning counting them"
                else:
                    sft = load_sft_dataset(cfg)
                    problem = check_sft_rows(sft) or (encode_sft(tok, sft, cfg, max_tokens=64) and None)
            last = names[-1] if bytes_mutated else None
            if problem is None and (last == "empty" or last == "duplicate_csv_column" and fmt == "csv"):
                problem = ("an empty file" if last == "empty" else "a duplicated column name") + " loaded without an error"
            if problem:
                return [f"{loader}: finding"], f"{label} [{loader}]: {problem}"
            outcomes.append(f"{loader}: loaded")
        except DataError:
            outcomes.append(f"{loader}: DataError")
        except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
            last = traceback.extract_tb(e.__traceback__)[-1]
            return [f"{loader}: finding"], (f"{label} [{loader}]: {type(e).__name__}: {str(e)[:200]} "
                                            f"(at {last.filename}:{last.lineno})")
    return outcomes, label


def fuzz(iterations: int, seed: int = 0, keep: Path | None = None, only: int | None = None,
         out=sys.stdout) -> tuple[Counter, list[str]]:
    """Run the cases; returns the counts ("cases", and per loader "prompt: loaded", "sft: DataError",
    ...) and the findings."""
    from postrl.learner.tiny import build_tokenizer

    tok = build_tokenizer()
    counts, findings = Counter(), []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(keep) if keep else Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        for case in ([only] if only is not None else range(iterations)):
            outcomes, detail = run_case(case, seed, tmp, tok)
            counts.update(outcomes)
            counts["cases"] += 1
            if outcomes[-1].endswith("finding"):
                findings.append(detail)
                print(f"FINDING {detail}", file=out)
            elif keep is None:
                for f in tmp.glob(f"case{case}.*"):
                    f.unlink()
    return counts, findings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_loader", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write the case files here and keep them")
    parser.add_argument("--only", type=int, help="run this one case (its number from a finding)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    counts, findings = fuzz(args.iterations, args.seed, Path(args.keep) if args.keep else None, args.only)
    per_loader = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "cases")
    print(f"{counts['cases']} cases in {time.perf_counter() - t0:.1f} s (seed {args.seed}): {per_loader}; "
          f"{len(findings)} findings")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
