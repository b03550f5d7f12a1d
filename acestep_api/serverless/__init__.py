"""The RunPod serverless worker: the engine in-process behind the runpod SDK."""
