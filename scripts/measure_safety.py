"""SmolLM2's greedy replies to the course's safety set, written to course_lib/assets/.

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/measure_safety.py

(or each --part in a process of its own, then --merge their files). Lesson 13 reads the
replies (course_lib.safety.load_safety_replies) instead of generating
some 200 of them live: at about 15 tokens/s on one core they take minutes, past the lesson's
budget. It regenerates a few live and checks they equal the shipped ones. Greedy decoding, so
the file repeats; the hand labels of the refusal detector (in the output's "hand_labels") are
carried over from the existing file where a reply is unchanged.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from course_lib.chat import chat
from course_lib.files import write_text
from course_lib.pretrained import load_smollm2
from course_lib.safety import REPLIES_FILE, injection_messages, load_safety_set

REFUSAL_TOKENS = 32    # the first sentence says whether a reply declines
INJECTION_TOKENS = 32  # enough for the start of a summary, or for the planted word
ONE_WORD_TOKENS = 6
ONE_WORD_SYSTEM = "Answer with exactly one word."
FEW_SHOT = [{"role": "user", "content": "What is the largest planet?"},
            {"role": "assistant", "content": "Jupiter"},
            {"role": "user", "content": "What do bees make?"},
            {"role": "assistant", "content": "Honey"}]


def prompting_ways(question: str) -> dict[str, list[dict]]:
    """The three ways lesson 13 asks a one-word question."""
    user = {"role": "user", "content": question}
    return {"question only": [user],
            "system prompt": [{"role": "system", "content": ONE_WORD_SYSTEM}, user],
            "few-shot": FEW_SHOT + [user]}


PARTS = ("decline", "look_alarming", "rewordings", "injection_plain", "injection_guarded",
         "prompting")


def _old_labels(path: Path) -> dict:
    return json.loads(path.read_text("utf-8")).get("hand_labels", {}) if path.exists() else {}


def merge(files: list[str], path: Path) -> dict:
    """One replies file from the part files of parallel runs (the same replies as one run)."""
    out: dict = {}
    for f in files:
        part = json.loads(Path(f).read_text("utf-8"))
        part.pop("hand_labels", None)
        seconds = part.pop("seconds", 0)
        injection = part.pop("injection", {})
        out.update(part)
        out.setdefault("injection", {}).update(injection)
        out["seconds"] = out.get("seconds", 0) + seconds
    out["hand_labels"] = _old_labels(path)
    write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"merged {len(files)} files into {path}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "course_lib"
                                             / "assets" / REPLIES_FILE))
    parser.add_argument("--part", choices=PARTS, default=None,
                        help="make only this part (to run parts in parallel processes, then "
                             "merge their files with --merge)")
    parser.add_argument("--merge", nargs="*", default=None, metavar="FILE",
                        help="merge part files into --out, generating nothing")
    args = parser.parse_args(argv)
    if args.merge is not None:
        return merge(args.merge, Path(args.out))
    torch.set_num_threads(1)
    start = time.process_time()
    model, tok = load_smollm2()
    s = load_safety_set()

    def reply(messages, n):
        return chat(model, tok, messages, max_new_tokens=n)

    out: dict = {"command": "OMP_NUM_THREADS=1 taskset -c 0 python scripts/measure_safety.py",
                 "settings": {"decoding": "greedy", "refusal_tokens": REFUSAL_TOKENS,
                              "injection_tokens": INJECTION_TOKENS,
                              "one_word_tokens": ONE_WORD_TOKENS}}
    wanted = PARTS if args.part is None else (args.part,)
    for kind in ("decline", "look_alarming", "rewordings"):
        if kind in wanted:
            out[kind] = [reply([{"role": "user", "content": q}], REFUSAL_TOKENS)
                         for q in s[kind]]
            print(kind, "done", flush=True)
    for g in ("plain", "guarded"):
        if f"injection_{g}" in wanted:
            out.setdefault("injection", {})[g] = [
                reply(injection_messages(d, guarded=g == "guarded"), INJECTION_TOKENS)
                for d in s["injection_documents"]]
            print("injection", g, "done", flush=True)
    if "prompting" in wanted:
        out["prompting"] = {way: [] for way in prompting_ways("?")}
        for q, _ in s["one_word_questions"]:
            for way, msgs in prompting_ways(q).items():
                out["prompting"][way].append(reply(msgs, ONE_WORD_TOKENS))
    path = Path(args.out)
    out["hand_labels"] = _old_labels(path)
    out["seconds"] = round(time.process_time() - start)
    write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} in {out['seconds']} CPU s")
    return out


if __name__ == "__main__":
    main()
