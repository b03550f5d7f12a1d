"""The server's work between a dialect and the queue: submitting and waiting for jobs,
files a request brings, checks against what the engine serves. No routing here."""
