"""What a parsed request must satisfy before it is queued, wherever it came from (an HTTP
route or the RunPod worker): its task suits the model it names (`task_check`), the audio paths
it names lie where requests may read (`audio_paths`), and its audio decodes within bounds
(`audio_check`). Transport-free: a refusal is an `InvalidField` naming the field."""
