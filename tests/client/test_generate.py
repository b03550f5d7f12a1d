"""`acestep-api generate` as a real process against a real demo server process."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from pathlib import Path

import soundfile as sf

from acestep_api.client.api_client import AceStepClient
from acestep_api.client.generate import info_lines, output_path
from tests.client.cli_process import cli_env, generate_command, run_generate
from tests.client.conftest import API_KEY
from tests.e2e.server_process import free_port

UNREACHABLE = "Error: API is not responding. Check the URL and try again.\n"
PLAIN_PROGRESS = re.compile(r"^  (Waiting for task to start\.\.\.|Generating\.\.\.) \(\d+s\)$")
FAST = ("--poll-interval", "0.2")


def task_id_of(stdout: str) -> str:
    (task_id,) = re.findall(r"^  Task ID: (\S+)$", stdout, re.MULTILINE)
    return task_id


def assert_song(path: Path, seconds: float) -> None:
    samples, rate = sf.read(path)
    assert rate == 48000 and samples.shape[1] == 2
    assert abs(len(samples) / rate - seconds) < 0.1


def test_batch_of_two_saves_numbered_files_and_prints_their_paths_last(open_server, tmp_path):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("[Verse]\nCafé au lait, ♪ la la\n\n[Chorus]\nHome again\n", encoding="utf-8")
    caption = "Warm bossa nova with nylon-string guitar, soft brushed drums and a hushed vocal"
    output = tmp_path / "songs" / "name.mp3"
    done = run_generate("--api-url", open_server.url + "/", "-c", caption, "-f", lyrics, "-d", "10", "-b", "2",
                        "-o", output, *FAST)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # stderr is a pipe here: no bar
    first, second = tmp_path / "songs" / "name_1.mp3", tmp_path / "songs" / "name_2.mp3"
    assert sorted(p.name for p in output.parent.iterdir()) == ["name_1.mp3", "name_2.mp3"]
    for song in (first, second):
        assert_song(song, 10.0)

    lines = done.stdout.splitlines()
    assert lines[-2:] == [str(first.resolve()), str(second.resolve())]
    expected_in_order = [
        f"Connecting to {open_server.url}...",  # the trailing slash is stripped
        "API is healthy!",
        "",
        "Submitting generation task:",
        f"  Caption: {caption[:60]}...",
        "  Duration: 10s",
        "  Batch size: 2",
    ]
    assert lines[:len(expected_in_order)] == expected_in_order
    assert lines[7].startswith("  Task ID: ")
    assert lines[8:10] == ["", "Waiting for generation (this may take 30-120+ seconds)..."]
    progress = lines[10:lines.index("Generation complete!")]
    assert progress and all(PLAIN_PROGRESS.match(line) for line in progress)
    after = lines[lines.index("Generation complete!"):]
    assert after[:6] == ["Generation complete!", "", "Downloading 2 audio file(s)...",
                         f"  Saved: {first}", f"  Saved: {second}", ""]
    assert after[6] == "Done! Generated 2 file(s)."
    # The demo serves the LM, so generation_info has a BPM line: printed without markdown.
    info = after[7:-2]
    assert any(line.startswith("  BPM: ") for line in info)
    assert any("Total Time:" in line for line in info)
    assert "**" not in done.stdout

    # The lyrics file arrived as written, non-ASCII included.
    with AceStepClient(open_server.url) as client:
        state = client.query(task_id_of(done.stdout))
    assert state.elements[0]["metas"]["lyrics"] == lyrics.read_text(encoding="utf-8")


def test_quiet_prints_only_the_paths_and_adds_mp3_when_there_is_no_suffix(open_server, tmp_path):
    done = run_generate("--api-url", open_server.url, "-c", "ambient drone", "-d", "10", "-q",
                        "-o", tmp_path / "track", *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{(tmp_path / 'track.mp3').resolve()}\n"
    assert done.stderr == ""
    assert_song(tmp_path / "track.mp3", 10.0)


def test_one_file_at_output_with_the_bar_on_a_terminal(open_server, tmp_path):
    # stderr is a terminal (a pty), stdout a pipe: the bar goes to the terminal, instead of
    # the plain lines, and stdout keeps every other line.
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed its end
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    output = tmp_path / "deep" / "er" / "song.mp3"
    try:
        process = subprocess.Popen(
            generate_command("--api-url", open_server.url, "-c", "synthwave", "-l", r"[Verse]\nline one\nline two",
                             "-d", "10", "-o", output, *FAST),
            stdout=subprocess.PIPE, stderr=follower, text=True, env=cli_env(),
        )
        os.close(follower)
        stdout, _ = process.communicate(timeout=180)
        reader.join(timeout=30)
    finally:
        os.close(leader)

    assert process.returncode == 0, drawn.decode("utf-8", "replace")
    terminal = drawn.decode("utf-8", "replace")
    assert "Generating" in terminal and "Done 100%|" in terminal
    assert not any(PLAIN_PROGRESS.match(line) for line in stdout.splitlines())

    assert [p.name for p in output.parent.iterdir()] == ["song.mp3"]
    assert_song(output, 10.0)
    lines = stdout.splitlines()
    assert lines[-1] == str(output.resolve())
    assert "Downloading 1 audio file(s)..." in lines and "Done! Generated 1 file(s)." in lines
    # Each literal \n of --lyrics arrived as a line break.
    with AceStepClient(open_server.url) as client:
        state = client.query(task_id_of(stdout))
    assert state.elements[0]["metas"]["lyrics"] == "[Verse]\nline one\nline two"


def test_missing_lyrics_file_is_reported_before_connecting(tmp_path):
    missing = tmp_path / "nope.txt"
    done = run_generate("--api-url", f"http://127.0.0.1:{free_port()}", "-c", "x", "--lyrics-file", missing)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"Error: Lyrics file not found: {missing}\n")


def test_server_down_is_reported_as_the_community_cli_does():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    done = run_generate("--api-url", url, "-c", "x")
    assert (done.returncode, done.stdout, done.stderr) == (1, f"Connecting to {url}...\n", UNREACHABLE)


def test_a_refused_submission_shows_the_servers_answer(open_server, tmp_path):
    done = run_generate("--api-url", open_server.url, "-c", "x", "-d", "5", "-o", tmp_path / "x.mp3")
    assert done.returncode == 1
    assert done.stderr.startswith("Error submitting task: API error 400: ")
    assert "audio_duration" in done.stderr
    assert "API is healthy!" in done.stdout and "Task ID" not in done.stdout
    assert not (tmp_path / "x.mp3").exists()


def test_a_failed_generation_says_why(open_server, tmp_path):
    # A disk that refuses the audio: the server's audio folder is a plain file for a moment.
    audio_dir = open_server.output_dir / "api_audio"
    kept = open_server.output_dir / "api_audio.kept"
    audio_dir.rename(kept)
    audio_dir.write_text("not a folder")
    try:
        done = run_generate("--api-url", open_server.url, "-c", "x", "-d", "10", "-o", tmp_path / "x.mp3", *FAST)
    finally:
        audio_dir.unlink()
        kept.rename(audio_dir)

    assert done.returncode == 1
    first, *reason = done.stderr.splitlines()
    assert first == "Error: Generation failed"
    with AceStepClient(open_server.url) as client:
        state = client.query(task_id_of(done.stdout))
    assert state.status == 2 and state.error
    assert "\n".join(reason) == state.error.rstrip("\n")
    assert "Generation complete!" not in done.stdout and not (tmp_path / "x.mp3").exists()


def test_timeout(open_server, tmp_path):
    # The first poll finds the task unfinished (it was just submitted); the next comes after 2 s.
    done = run_generate("--api-url", open_server.url, "-c", "x", "-d", "10", "--timeout", "1",
                        "--poll-interval", "2", "-o", tmp_path / "x.mp3")
    assert (done.returncode, done.stderr) == (1, "Error: Timeout after 1 seconds\n")
    assert not (tmp_path / "x.mp3").exists()


def test_ctrl_c_while_waiting_names_the_task_and_exits_130(open_server, tmp_path):
    process = subprocess.Popen(
        generate_command("--api-url", open_server.url, "-c", "x", "-d", "10", "-o", tmp_path / "x.mp3", *FAST),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    lines = []
    for line in process.stdout:  # the first progress line is printed from inside the wait
        lines.append(line)
        if PLAIN_PROGRESS.match(line.rstrip("\n")):
            break
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=60)
    task_id = task_id_of("".join(lines))
    assert process.returncode == 130
    assert stderr == f"Interrupted; task {task_id} may still run on the server.\n"
    assert not (tmp_path / "x.mp3").exists()


def test_api_key_from_the_flag_or_the_environment(keyed_server, tmp_path):
    url = keyed_server.url
    without = run_generate("--api-url", url, "-c", "x", "-d", "10", "-o", tmp_path / "no.mp3")
    assert without.returncode == 1
    assert without.stderr.startswith("Error submitting task: API error 401: ") and "Missing" in without.stderr

    wrong_env = cli_env(ACESTEP_API_KEY="wrong")
    from_env = run_generate("--api-url", url, "-c", "x", "-d", "10", "-o", tmp_path / "no.mp3", env=wrong_env)
    assert from_env.returncode == 1  # the environment's key was sent, and refused
    assert from_env.stderr.startswith("Error submitting task: API error 401: ") and "Invalid" in from_env.stderr

    flag_wins = run_generate("--api-url", url, "--api-key", API_KEY, "-c", "x", "-d", "10", "-q",
                             "-o", tmp_path / "flag.mp3", *FAST, env=wrong_env)
    assert flag_wins.returncode == 0, flag_wins.stderr
    assert flag_wins.stdout == f"{(tmp_path / 'flag.mp3').resolve()}\n"
    assert_song(tmp_path / "flag.mp3", 10.0)  # the download carried the key too


def test_guides_need_neither_url_nor_caption():
    lyrics = run_generate("--show-lyrics-help")
    assert lyrics.returncode == 0 and "[Chorus]" in lyrics.stdout and "[Instrumental]" in lyrics.stdout
    caption = run_generate("--show-caption-help")
    assert caption.returncode == 0 and "CAPTION" in caption.stdout and "[Chorus]" not in caption.stdout


def test_usage_errors_exit_2():
    no_caption = run_generate("--api-url", "http://127.0.0.1:1")
    assert no_caption.returncode == 2 and "required: --caption" in no_caption.stderr
    both_lyrics = run_generate("--api-url", "http://127.0.0.1:1", "-c", "x", "-l", "a", "-f", "b.txt")
    assert both_lyrics.returncode == 2 and "not allowed with" in both_lyrics.stderr
    negative_poll = run_generate("--api-url", "http://127.0.0.1:1", "-c", "x", "--poll-interval", "-1")
    assert negative_poll.returncode == 2 and "--poll-interval" in negative_poll.stderr


def test_output_naming(tmp_path):
    out = Path("dir/song.wav")
    assert output_path(out, 0, 1) == out
    assert [output_path(out, i, 3) for i in range(3)] == [Path(f"dir/song_{i}.wav") for i in (1, 2, 3)]
    assert output_path(Path("take"), 0, 1) == Path("take.mp3")
    assert output_path(Path("take"), 1, 2) == Path("take_2.mp3")
    assert output_path(tmp_path, 0, 1) == tmp_path / "output.mp3"  # an existing folder
    assert output_path(tmp_path, 1, 2) == tmp_path / "output_2.mp3"


def test_generation_info_lines():
    info = ("**🤖 LM-Generated Metadata:**\n- **BPM:** 120\n- **Refined Caption:** pop\n- **Key Scale:** C major\n\n"
            "**🎵 Generation Complete**\n**Seeds:** 1,2\n\n**⏱️ Total Time: 3.61s**")
    assert info_lines(info) == ["  BPM: 120", "  Key Scale: C major", "⏱️ Total Time: 3.61s"]
    assert info_lines("**⏱️ Total Time: 3.61s**") == []  # no BPM, no lines (as the community CLI)
    assert info_lines(None) == []

