"""python -m server --model shipped|smollm2: serve a model over OpenAI's API with uvicorn."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from course_lib.pretrained import load_pretrained, load_smollm2
from course_lib.safety import train_gate
from server.app import create_app
from server.limits import GRACEFUL_SHUTDOWN_S

# --model: (the model's id in the API, how to load it)
MODELS = {
    "shipped": ("shakespeare-gpt", load_pretrained),
    "smollm2": ("SmolLM2-135M-Instruct", load_smollm2),
}


class _Server(uvicorn.Server):
    """uvicorn's server, which also stops admitting requests the moment a signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runner = getattr(self._app.state, "runner", None)  # None before the app has started
        if runner is not None:
            runner.stop_admitting()
        super().handle_exit(sig, frame)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=_positive, default=16,
                        help="requests run together in one step (1: one at a time)")
    parser.add_argument("--max-waiting", type=_positive, default=None,
                        help="requests that may wait for a slot; more get 429 (default: no limit)")
    parser.add_argument("--moderation", type=_probability, default=None, metavar="P",
                        help="put course_lib.safety's moderation gate in front of the model: a "
                             "prompt it scores P or more is answered with a refusal (default: "
                             "off)")
    args = parser.parse_args(argv)

    model_name, load = MODELS[args.model]
    model, tokenizer = load()
    gate = None if args.moderation is None else train_gate(args.moderation)
    app = create_app(model, tokenizer, model_name, moderation=gate,
                     max_batch_size=args.max_batch_size, max_waiting=args.max_waiting)
    server = _Server(uvicorn.Config(app, host=args.host, port=args.port,
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S), app)
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again, which with
    # the default handler kills the process (returncode -15). A graceful stop is a success:
    # with this handler in place the re-raised signal is ignored and the process exits 0.
    signal.signal(signal.SIGTERM, lambda sig, frame: None)
    server.run()


if __name__ == "__main__":
    main()
