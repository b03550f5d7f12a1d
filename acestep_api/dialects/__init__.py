"""The wire formats the server speaks, one module each, free of any transport.

Each dialect module holds its protocol models, `parse` (a wire body -> `GenerationRequest`, or
an `InvalidField` naming the field) and `render` (a job -> its wire answer). HTTP routes and
the RunPod worker call them; nothing here reads a socket, a header or a database.

- `official`: the official ACE-Step 1.5 API (`/release_task`, `/query_result`, the envelope)
- `official_lm`: the official API's LM routes (`/format_input`, `/v1/create_sample`)
- `legacy`: the older `/v1/music/generate` and `/v1/jobs/{id}` API
- `chat`: OpenAI chat completions (`/v1/chat/completions`)
- `fal`: fal.ai's prompt-to-audio
- `runpod`: the two RunPod serverless input dialects (ACE-Step 1.5's and v1's)
- `coercion`: the field rules every dialect shares (numbers, booleans, text limits, seeds)
"""
