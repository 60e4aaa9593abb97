"""Every limit and default of the HTTP server, in one place."""

MAX_MESSAGES = 64  # messages in one chat request
MAX_CHARS = 32_000  # characters of a prompt, or of all messages' contents together
MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_STOP_CHARS = 64  # characters of one stop string
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
DEFAULT_CHAT_TOKENS = 512  # a chat reply's default max_tokens (less where the context ends)
MAX_TEMPERATURE = 2.0  # as OpenAI's API
MAX_PENALTY = 2.0  # presence_penalty and frequency_penalty lie in [-2, 2], as OpenAI's API
MAX_SEED = 2**63 - 1  # the largest seed a JSON client can send as a 64-bit signed int

RETRY_AFTER_S = 1  # what a 429 (queue full) tells the client to wait
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is there
GRACEFUL_SHUTDOWN_S = 3  # after SIGTERM, in-flight requests get this long before they are cancelled
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
