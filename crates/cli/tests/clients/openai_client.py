"""The official `openai` package against `tp06 serve`, unchanged: a
completion, a stream, and an error, as an existing client would make them.

    python3 openai_client.py BASE_URL PROMPT

Prints one JSON object: the greedy text, the streamed text, the number of
chunks, the models listed, and the error's status and type.
"""
import json
import sys

import openai

url, prompt = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=url + "v1", api_key="not-needed-on-loopback")
models = [m.id for m in client.models.list()]
done = client.completions.create(model="tp06", prompt=prompt, max_tokens=20, temperature=0)
chunks = list(client.completions.create(model="tp06", prompt=prompt, max_tokens=20, temperature=0, stream=True))
streamed = "".join(c.choices[0].text for c in chunks if c.choices)
try:
    client.completions.create(model="tp06", prompt=prompt, temperature=-1)
    error = None
except openai.BadRequestError as e:
    error = {"status": e.status_code, "type": e.body.get("type") if isinstance(e.body, dict) else None,
             "param": e.body.get("param") if isinstance(e.body, dict) else None}
print(json.dumps({
    "models": models,
    "text": done.choices[0].text,
    "finish_reason": done.choices[0].finish_reason,
    "usage": done.usage.completion_tokens,
    "streamed": streamed,
    "chunks": len(chunks),
    "error": error,
}))
