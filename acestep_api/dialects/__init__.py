"""The wire formats the server speaks, one module each, free of any transport.

Each dialect module holds its protocol models, `parse` (a wire body -> `GenerationRequest`, or
an `InvalidField` naming the field) and `render` (a job -> its wire answer). HTTP routes and
the RunPod worker call them; nothing here reads a socket, a header or a database.

- `official`: the official ACE-Step 1.5 API (`/release_task`, `/query_result`)
- `coercion`: the field rules every dialect shares (numbers, booleans, text limits, seeds)
"""
