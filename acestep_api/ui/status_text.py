"""The words the page shows about a job: where it stands while it waits or runs, and what
each finished song was made with."""

from __future__ import annotations

from acestep_api.client.api_client import TaskState

BAR_WIDTH = 20


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def duration_words(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"


def waiting_text(state: TaskState, elapsed: float) -> str:
    """One or two lines of markdown for a job that has not ended."""
    task = f"task `{state.task_id}`"
    if not state.known:
        return f"⏳ Submitted ({task}); waiting for the server to report it…"
    position = state.queue_position
    if position is not None:
        eta = state.eta_seconds
        wait = f", about {duration_words(eta)} to wait" if isinstance(eta, (int, float)) else ""
        return f"⏳ Queued: position {position} in line{wait} ({task})"
    stage = state.stage
    if not stage or stage == "queued":
        stage = "starting"
    percent = round(state.progress * 100)
    return (f"🎛️ Running: {stage} — {percent}%  \n"
            f"`{progress_bar(state.progress)}` {duration_words(elapsed)} elapsed ({task})")


def finished_text(state: TaskState, songs: int, elapsed: float) -> str:
    if state.succeeded:
        noun = "song" if songs == 1 else "songs"
        return f"✅ Done: {songs} {noun} in {duration_words(elapsed)} (task `{state.task_id}`)"
    return failure_text(state.error or state.stage or "the job failed without a message")


def failure_text(message: str) -> str:
    return f"❌ {message}"


def _metas_line(metas: dict) -> str:
    labels = (("bpm", "BPM"), ("keyscale", "Key"), ("timesignature", "Time signature"), ("duration", "Duration"))
    parts = []
    for key, label in labels:
        value = metas.get(key)
        if value in (None, "", "N/A"):
            continue
        if key == "duration" and isinstance(value, (int, float)):
            value = f"{value:g} s"
        parts.append(f"**{label}:** {value}")
    return " · ".join(parts)


def song_details(element: dict, index: int) -> str:
    """Markdown for one finished song: its seed, the metadata used, the models and the
    server's generation_info."""
    lines = []
    seeds = str(element.get("seed_value") or "").split(",")
    if index < len(seeds) and seeds[index].strip():
        lines.append(f"**Seed:** {seeds[index].strip()}")
    metas = element.get("metas")
    if isinstance(metas, dict) and (line := _metas_line(metas)):
        lines.append(line)
    models = [f"**{label}:** {element[key]}" for key, label in (("dit_model", "Model"), ("lm_model", "LM"))
              if element.get(key)]
    if models:
        lines.append(" · ".join(models))
    if element.get("prompt"):
        lines.append(f"**Caption used:** {element['prompt']}")
    info = element.get("generation_info")
    if info:
        lines.append(f"<details><summary>Generation info</summary>\n\n{info}\n\n</details>")
    return "\n\n".join(lines)
