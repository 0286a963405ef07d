"""A trained reward model served over HTTP to RL loops on other machines (`reward-serve --model DIR`).

The request path, in order (docs/serving.md):

    cli.py        ServeConfig, the start-up line, uvicorn, SIGTERM -> finish in-flight requests, exit 0
    app.py        the FastAPI app: /score, /get_reward (OpenRLHF), /health, /info, /metrics; the key,
                  the body cap, a client that went away
    protocol.py   request bodies -> groups of (prompt, completions); each problem an HTTP status naming
                  the field (no web framework: the rules are tested directly)
    engine.py     groups -> token ids formatted as training formatted them, held to the length rule, cut
                  into pieces the batcher can schedule; rewards -> the response
    batcher.py    one worker thread runs the model: concurrent requests merged into micro-batches bounded
                  by tokens and a wait, completions of one prompt computed as one segment (the prompt once)
    telemetry.py  the Prometheus metrics
    client.py     RemoteRewardFunction: TRL's reward_funcs signature over one or several servers (stdlib only)

fastapi, uvicorn and prometheus_client are the `serve` extra, imported only when a server starts; the
client needs none of them.
"""
