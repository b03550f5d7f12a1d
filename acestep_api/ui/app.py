"""The page: a gradio.Blocks layout of the generation form and the result slots, wired to
the event functions in handlers.py."""

from __future__ import annotations

from typing import Any

import gradio as gr

from acestep_api.ui import form, handlers
from acestep_api.ui.handlers import UiContext

TITLE = "ACE-Step 1.5"
# Gradio's copies of downloaded songs and pictures: swept hourly, kept a day.
CACHE_SWEEP = (3600, 24 * 3600)


def _form_components(model_choices: list[tuple[str, str]]) -> dict[str, Any]:
    """The inputs, laid out in the current Blocks context, by FormValues field name."""
    defaults = form.FormValues()
    c: dict[str, Any] = {}
    c["caption"] = gr.Textbox(label="Caption", lines=3, elem_id="caption",
                              placeholder="upbeat electronic dance music with heavy bass, female vocals")
    c["lyrics"] = gr.Textbox(label="Lyrics", lines=8, elem_id="lyrics",
                             placeholder="[Verse]\n...\n\n[Chorus]\n...  ([inst] for an instrumental)")
    with gr.Row():
        # No bounds here: the server checks ranges and its message names the field.
        c["bpm"] = gr.Number(label="BPM", value=None, precision=0, info="30-300; empty or 0: automatic",
                             elem_id="bpm")
        c["key_scale"] = gr.Dropdown(label="Key / scale", choices=list(form.KEY_SCALES), value=defaults.key_scale,
                                     allow_custom_value=True, info="empty: automatic", elem_id="key-scale")
        c["time_signature"] = gr.Dropdown(label="Time signature", choices=list(form.TIME_SIGNATURES),
                                          value=defaults.time_signature, elem_id="time-signature")
        c["vocal_language"] = gr.Dropdown(label="Vocal language", choices=list(form.VOCAL_LANGUAGES),
                                          value=defaults.vocal_language, allow_custom_value=True,
                                          elem_id="vocal-language")
    with gr.Row():
        c["duration"] = gr.Number(label="Duration (s)", value=30, info="10-600; empty or 0: automatic",
                                  elem_id="duration")
        c["batch_size"] = gr.Slider(label="Batch size", minimum=1, maximum=form.MAX_BATCH, step=1,
                                    value=defaults.batch_size, elem_id="batch-size")
    with gr.Row():
        c["model"] = gr.Dropdown(label="Model", choices=model_choices, value=form.SERVER_DEFAULT_MODEL,
                                 elem_id="model")
        c["task_type"] = gr.Dropdown(label="Task", choices=list(form.TASK_TYPES), value=defaults.task_type,
                                     elem_id="task-type")
    c["source_audio"] = gr.Audio(label="Source audio (cover, repaint, extract, lego, complete)", type="filepath",
                                 sources=["upload"], visible=False, elem_id="source-audio")
    c["reference_audio"] = gr.Audio(label="Reference audio (timbre, optional)", type="filepath",
                                    sources=["upload"], elem_id="reference-audio")
    with gr.Row(visible=False) as c["_repaint_row"]:
        c["repainting_start"] = gr.Number(label="Repaint from (s)", value=defaults.repainting_start)
        c["repainting_end"] = gr.Number(label="Repaint to (s)", value=defaults.repainting_end,
                                        info="-1: the end")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            c["inference_steps"] = gr.Slider(label="Inference steps", minimum=1, maximum=200, step=1,
                                             value=defaults.inference_steps, info="turbo models always run 8")
            c["guidance_scale"] = gr.Slider(label="Guidance scale", minimum=0, maximum=20, step=0.5,
                                            value=defaults.guidance_scale, info="base and SFT models")
        with gr.Row():
            c["seed"] = gr.Textbox(label="Seed", value=defaults.seed, elem_id="seed",
                                   info="random, an integer, or one per song separated by commas")
            c["audio_format"] = gr.Dropdown(label="Audio format", choices=list(form.AUDIO_FORMATS),
                                            value=defaults.audio_format, elem_id="audio-format")
        with gr.Row():
            c["thinking"] = gr.Checkbox(label="Thinking: the 5 Hz LM writes audio codes first",
                                        value=defaults.thinking, elem_id="thinking")
            c["audio_cover_strength"] = gr.Slider(label="Cover strength", minimum=0, maximum=1, step=0.05,
                                                  value=defaults.audio_cover_strength)
    return c


def _result_slot(number: int) -> list[Any]:
    """One song's column (hidden until filled): player, picture, download, details."""
    with gr.Column(visible=False, elem_id=f"result-{number}", elem_classes=["result-slot"]) as column:
        # No "share" buttons: they post to Hugging Face, and the page must work offline.
        player = gr.Audio(label=f"Song {number}", type="filepath", interactive=False, buttons=["download"],
                          waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                          elem_id=f"result-{number}-audio")
        image = gr.Image(label="Waveform and spectrogram", type="pil", format="png", interactive=False,
                         buttons=["download", "fullscreen"], elem_id=f"result-{number}-picture")
        download = gr.File(label="Download", interactive=False, elem_id=f"result-{number}-file")
        details = gr.Markdown(elem_id=f"result-{number}-details")
    return [column, player, image, download, details]


def build_ui(context: UiContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_SWEEP) as page:
        gr.Markdown(f"# {TITLE} music generation\nServer: `{context.api_url}` · every job waits in the "
                    "server's one queue, with those of its other clients.")
        inventory = gr.State([])
        with gr.Row():
            with gr.Column(scale=4):
                components = _form_components(handlers.model_choices([]))
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
                notes = gr.Markdown(elem_id="notes")
            with gr.Column(scale=5):
                slots = [output for number in range(1, form.MAX_BATCH + 1) for output in _result_slot(number)]

        form_inputs = [components[name] for name in handlers.FORM_FIELDS]
        model, task_type = components["model"], components["task_type"]

        def on_load(current_model: str, current_task: str):
            return handlers.load_models(context, current_model, current_task)

        def on_generate(request: gr.Request, known_models: list, *values: Any):
            yield from handlers.generate(context, known_models, *values, request=request)

        def on_cancel(request: gr.Request):
            return handlers.cancel(context, request)

        page.load(on_load, [model, task_type], [model, task_type, inventory, notes], api_visibility="private")
        model.change(handlers.task_choices, [model, task_type, inventory], [task_type], api_visibility="private")
        task_type.change(handlers.source_visibility, [task_type], [components["source_audio"],
                                                                 components["_repaint_row"]],
                         api_visibility="private")
        generate_button.click(on_generate, [inventory, *form_inputs], [status, model, inventory, notes, *slots],
                              concurrency_limit=None, show_progress="hidden", api_visibility="private")
        cancel_button.click(on_cancel, None, [notes], concurrency_limit=None, api_visibility="private")
    return page
