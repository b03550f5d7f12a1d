"""The browser UI: a Gradio app that talks to the REST API."""
