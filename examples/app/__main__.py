"""``python -m examples.app "topic"`` prints a title, outline and metadata;
``python -m examples.app --serve`` runs the web service.

Environment: ``OPENAI_BASE_URL`` (the sidecar, default http://localhost:8080/v1),
``OPENAI_API_KEY`` (a placeholder by default: the sidecar holds the real keys),
``APP_MODEL`` / ``APP_SMALL_MODEL`` (gpt-4o / gpt-4o-mini), ``APP_HOST`` /
``APP_PORT`` for ``--serve`` (127.0.0.1:8000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

import openai
from aiohttp import web

from examples.app.generate import Generator, Result, make_client
from examples.app.web import create_app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.app",
        description="Title, script outline and metadata for a topic, through the sidecar.",
    )
    parser.add_argument("topic", nargs="?", help="what the video is about")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--serve", action="store_true", help="run the web service instead")
    parser.add_argument("--host", default=os.environ.get("APP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("APP_PORT", "8000")))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.serve:
        web.run_app(create_app(), host=args.host, port=args.port, print=None)
        return 0
    if not args.topic or not args.topic.strip():
        parser.error("give a topic, or --serve")
    try:
        asyncio.run(run_once(args.topic.strip(), as_json=args.json))
    except openai.APIError as error:
        # What the sidecar could not save: say so, do not try again.
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


async def run_once(topic: str, *, as_json: bool = False) -> Result:
    async with make_client() as client:
        generator = Generator(client)
        if as_json:
            result = await generator.generate(topic)
            print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
            return result
        result = await generator.generate(topic, on_title=_title, on_delta=_delta)
        _finish(result)
        return result


def _title(title: str) -> None:
    print(f"Title: {title}\n\nOutline:", flush=True)


def _delta(text: str) -> None:
    print(text, end="", flush=True)  # the outline, as it streams


def _finish(result: Result) -> None:
    print("\n")
    print(f"Description: {result.metadata['description']}")
    if result.metadata["tags"]:
        print(f"Tags: {', '.join(result.metadata['tags'])}")
    if result.metadata["audience"]:
        print(f"Audience: {result.metadata['audience']}")
    print("\nAnswered by (as the sidecar reports it):")
    for call in result.calls:
        print(
            f"  {call.step:<9} {call.model:<20} upstream={call.upstream} "
            f"attempts={call.attempts}{' (stream)' if call.stream else ''}"
        )


if __name__ == "__main__":
    sys.exit(main())
