"""`acestep-api generate`: the community `generate_music.py`, flag for flag, with a progress bar.

It checks /health, submits one /release_task, polls /query_result until the task ends and
downloads each file. Its flags, messages (stdout or stderr, in the same order), exit codes and
file names are the community CLI's, so scripts written for that one keep working; the last
lines on stdout are always the absolute paths of the saved files. Additions: `--api-key` for
servers started with one, the progress bar on a terminal, the job's error text under
`Error: Generation failed`, and the two guides work without `--api-url` and `--caption`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = (
    "Generate music with a running ACE-Step API server: submit a task, wait for it (a progress\n"
    "bar on a terminal), download the audio. Flags and output are those of the community\n"
    "generate_music.py."
)

DEFAULT_OUTPUT = Path("output.mp3")
UNREACHABLE = "Error: API is not responding. Check the URL and try again."
INFO_MARKERS = ("BPM:", "Key Scale:", "Total Time:")

CAPTION_GUIDE = """
=== WRITING A CAPTION ===

The caption (--caption / -c) tells the model what the song sounds like. Describe the sound,
not the story: the story belongs in the lyrics.

WHAT TO MENTION:
  Genre and era     synthwave, 90s boom bap, bossa nova, baroque chamber music
  Instruments       nylon-string guitar, Rhodes piano, 808 bass, brass section
  Mood and energy   wistful, triumphant, tense, laid-back, euphoric
  Tempo feel        slow and spacious, mid-tempo groove, driving and fast
  Voice             breathy female vocal, gravelly baritone, children's choir, no vocals
  Production        lo-fi tape hiss, wide cinematic mix, dry and intimate, heavy sidechain

A phrase or a comma-separated list of tags both work. Say what the song has rather than
what it lacks; for an instrumental, leave the lyrics empty (see --show-lyrics-help).

EXAMPLES:
  "Warm bossa nova with nylon-string guitar, soft brushed drums and a hushed male vocal"
  "Driving synthwave, gated reverb drums, analog bass arpeggios, neon night-drive mood"
  "Sparse piano ballad, close-miked upright piano, fragile female vocal, lots of space"
  "Gritty garage rock, fuzz guitars, pounding floor tom, shouted gang vocals"
  "Chill lo-fi hip hop, dusty vinyl crackle, jazzy Rhodes chords, lazy swing drums"

LENGTH AND BATCH:
  Set the length with --duration (seconds) instead of writing it in the caption, and ask for
  several takes of the same idea with --batch-size.
"""

LYRICS_GUIDE = """
=== WRITING LYRICS ===

Lyrics (--lyrics / -l, or a text file with --lyrics-file / -f) are sung in order. Section
tags on their own line shape the arrangement:

  [Intro]  [Verse]  [Verse 2]  [Pre-Chorus]  [Chorus]  [Bridge]  [Outro]
  [Instrumental]  [Solo]  [Break]  [Drop]  [Build]

EXAMPLE (lyrics.txt):
  [Verse]
  Streetlights humming a tune of their own
  I walk the long way, I walk it alone

  [Chorus]
  Carry me home, carry me slow
  Down every road that I used to know

  [Bridge]
  And if the morning forgets my name
  I'll sing it louder all the same

  [Chorus]
  Carry me home, carry me slow

ON THE COMMAND LINE:
  --lyrics "[Verse]\\nFirst line\\nSecond line\\n\\n[Chorus]\\nHook line"
  Each \\n becomes a line break; a blank line between sections helps.

INSTRUMENTALS:
  Leave the lyrics out, or pass "[Instrumental]" (or "[inst]"), for a song without vocals.

TIPS:
  - Short lines with a steady rhythm are easier to sing than long sentences.
  - Repeat the chorus word for word; it becomes the hook.
  - Write in the language you want to hear sung.
  - Match the amount of text to --duration: a 30 s clip has room for a verse and a chorus.
"""

EPILOG = """
examples:
  acestep-api generate --api-url http://localhost:8001 \\
      -c "Upbeat indie pop with jangly guitars and energetic vocals" \\
      -l "[Verse]\\nWalking down the street\\n\\n[Chorus]\\nWe are alive tonight" -o song.mp3

  acestep-api generate --api-url https://<POD_ID>-8000.proxy.runpod.net \\
      -c "Dreamy folk ballad with acoustic guitar" -f lyrics.txt -d 120 -b 2 -o ballad.mp3
      (writes ballad_1.mp3 and ballad_2.mp3)

The absolute paths of the saved files are always the last lines on stdout, also with --quiet.
Guides: --show-caption-help, --show-lyrics-help.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    # --api-url and --caption are required, but checked in run() so the guides work alone.
    parser.add_argument("--api-url", help="base URL of the API, e.g. http://localhost:8001 or "
                                          "https://<POD_ID>-8000.proxy.runpod.net (required)")
    parser.add_argument("--caption", "-c", help="music style description: genre, instruments, mood, voice "
                                                "(required; see --show-caption-help)")
    lyrics = parser.add_mutually_exclusive_group()
    lyrics.add_argument("--lyrics", "-l", help=r"lyrics with section tags like [Verse], [Chorus]; \n starts a new line")
    lyrics.add_argument("--lyrics-file", "-f", type=Path, help="read the lyrics from this text file (UTF-8)")
    parser.add_argument("--duration", "-d", type=int, default=90, help="song length in seconds (default: 90)")
    parser.add_argument("--batch-size", "-b", type=int, default=1, help="number of variations (default: 1)")
    parser.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT,
                        help="output file (default: output.mp3); with several variations NAME_1.mp3, "
                             "NAME_2.mp3, ...; an existing folder gets output.mp3 inside it")
    parser.add_argument("--poll-interval", type=seconds, default=5, help="seconds between status checks (default: 5)")
    parser.add_argument("--timeout", type=int, default=600, help="give up after this many seconds (default: 600)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress output; the saved files' paths are still printed")
    parser.add_argument("--api-key", help="key of a server started with one, sent as 'Authorization: Bearer' "
                                          "(default: $ACESTEP_API_KEY)")
    parser.add_argument("--show-lyrics-help", action="store_true", help="print a guide to writing lyrics and exit")
    parser.add_argument("--show-caption-help", action="store_true", help="print a guide to writing captions and exit")
    parser.set_defaults(generate_parser=parser)


def seconds(text: str) -> float:
    """A non-negative number of seconds (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def output_path(output: Path, index: int, count: int) -> Path:
    """Where the result element at `index` (of `count`) is saved: `output` itself for a single
    element, else `<stem>_<index+1><suffix>`; `.mp3` when there is no suffix."""
    if output.is_dir():
        output = output / DEFAULT_OUTPUT
    if count == 1:
        path = output
    else:
        path = output.parent / f"{output.stem}_{index + 1}{output.suffix or '.mp3'}"
    return path if path.suffix else path.with_suffix(".mp3")


def info_lines(generation_info: object) -> list[str]:
    """The BPM, key and total-time lines of a result's markdown `generation_info`, without the
    markdown; none when the LM reported no BPM (as the community CLI)."""
    if not isinstance(generation_info, str) or "BPM:" not in generation_info:
        return []
    return [line.replace("**", "").replace("- ", "  ")
            for line in generation_info.split("\n") if any(marker in line for marker in INFO_MARKERS)]


def error(message: str) -> None:
    sys.stdout.flush()  # keep stdout and stderr in order when both go to one place
    print(message, file=sys.stderr, flush=True)


class Failed(Exception):
    """Ends the command: the message goes to stderr, the exit status is 1."""


def read_lyrics(args: argparse.Namespace) -> str:
    if args.lyrics_file is not None:
        if not args.lyrics_file.exists():
            raise Failed(f"Error: Lyrics file not found: {args.lyrics_file}")
        try:
            return args.lyrics_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as reason:
            raise Failed(f"Error: Cannot read lyrics file {args.lyrics_file}: {reason}") from None
    if args.lyrics:
        return args.lyrics.replace("\\n", "\n")  # shells pass "\n" literally
    return ""


def run(args: argparse.Namespace) -> int:
    if args.show_lyrics_help or args.show_caption_help:
        if args.show_lyrics_help:
            print(LYRICS_GUIDE)
        if args.show_caption_help:
            print(CAPTION_GUIDE)
        return 0
    missing = [flag for flag, value in (("--api-url", args.api_url), ("--caption", args.caption)) if value is None]
    if missing:
        message = f"the following arguments are required: {', '.join(missing)}"
        parser = getattr(args, "generate_parser", None)
        if parser is not None:
            parser.error(message)  # usage on stderr, exit status 2, as argparse does
        error(f"error: {message}")
        return 2
    try:
        return generate(args, read_lyrics(args))
    except Failed as failure:
        error(str(failure))
        return 1


def generate(args: argparse.Namespace, lyrics: str) -> int:
    # Imported here: `acestep-api --help` and the guides need no HTTP stack.
    import httpx

    from acestep_api.client.api_client import AceStepClient, ApiError, TimeoutExpired
    from acestep_api.client.progress import choose_display

    quiet = args.quiet

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    api_url = args.api_url.rstrip("/")
    api_key = args.api_key or os.environ.get("ACESTEP_API_KEY") or None
    say(f"Connecting to {api_url}...")
    try:
        client = AceStepClient(api_url, api_key)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise Failed(UNREACHABLE) from None
    with client:
        if not client.is_healthy():
            raise Failed(UNREACHABLE)
        say("API is healthy!")
        say("\nSubmitting generation task:")
        say(f"  Caption: {args.caption[:60]}{'...' if len(args.caption) > 60 else ''}")
        say(f"  Duration: {args.duration}s")
        say(f"  Batch size: {args.batch_size}")
        try:
            task_id = client.submit(args.caption, lyrics, duration=args.duration, batch_size=args.batch_size)
        except ApiError as reason:
            raise Failed(f"Error submitting task: {reason}") from None
        except httpx.HTTPError as reason:
            raise Failed(f"Error submitting task: Connection error: {reason}") from None
        except (ValueError, KeyError, TypeError) as reason:
            raise Failed(f"Error submitting task: unexpected answer from the server ({reason!r})") from None
        say(f"  Task ID: {task_id}")
        say("\nWaiting for generation (this may take 30-120+ seconds)...")

        display = choose_display(quiet)
        try:
            state = client.wait(task_id, poll_interval=args.poll_interval, timeout=args.timeout,
                                on_update=display.update)
        except (TimeoutExpired, ApiError) as reason:
            raise Failed(f"Error: {reason}") from None
        except httpx.HTTPError as reason:
            raise Failed(f"Error: Connection error: {reason}") from None
        except ValueError as reason:
            raise Failed(f"Error: unexpected answer from the server ({reason})") from None
        except KeyboardInterrupt:
            display.close()  # end the bar's line before the message
            error(f"Interrupted; task {task_id} may still run on the server.")
            return 130
        finally:
            display.close()
        if not state.succeeded:
            details = f"\n{state.error}" if state.error else ""
            raise Failed(f"Error: Generation failed{details}")
        say("Generation complete!")
        saved = download_all(client, state.elements, args.output, say)

    say(f"\nDone! Generated {len(saved)} file(s).")
    if not quiet and state.elements and isinstance(state.elements[0], dict):
        for line in info_lines(state.elements[0].get("generation_info")):
            print(line)
    for path in saved:  # for scripts: always, and always last
        print(path.resolve())
    return 0


def download_all(client, elements: list, output: Path, say) -> list[Path]:
    """Save every element's file; a failed download is reported on stderr and skipped."""
    import httpx

    from acestep_api.client.api_client import ApiError

    say(f"\nDownloading {len(elements)} audio file(s)...")
    saved = []
    for index, element in enumerate(elements):
        file_url = element.get("file") if isinstance(element, dict) else None
        if not file_url:
            continue
        path = output_path(output, index, len(elements))
        try:
            client.download(file_url, path)
        except ApiError as reason:
            error(f"  Error downloading {file_url}: Download error {reason.status_code}: {reason.body}")
        except (httpx.HTTPError, OSError) as reason:
            error(f"  Error downloading {file_url}: {reason}")
        else:
            saved.append(path)
            say(f"  Saved: {path}")
    return saved
