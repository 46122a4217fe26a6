"""`persona serve` driven by the official OpenAI Python SDK, as a chat front end would.

    python openai_client.py BASE_URL TOKEN CREATOR OTHER_CREATOR

Talks to BASE_URL (`http://127.0.0.1:PORT/v1`) with the bearer TOKEN and prints one JSON object
of what it saw: a plain completion, a streamed one with usage, a fan's server-side history
across calls (by `user` and by Open WebUI's header), the second creator, and the errors the SDK
raises for an unknown model, a streamed n=2 and a wrong key. The Rust test that runs it asserts
on that object; this script only fails when the SDK itself cannot talk to the server.
"""

import json
import sys
import urllib.request

import openai


def history(base, token, creator, fan):
    """The stored messages of `fan` of `creator`, or the HTTP status when there is none."""
    request = urllib.request.Request(
        f"{base}/fans/{fan}/messages?creator={creator}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return [m["content"] for m in json.load(response)["messages"]]
    except urllib.error.HTTPError as e:
        return e.code


def error_of(call):
    """The SDK exception class a call raises, or None."""
    try:
        call()
    except openai.OpenAIError as e:
        return type(e).__name__
    return None


def main():
    base, token, creator, other = sys.argv[1:5]
    client = openai.OpenAI(base_url=base, api_key=token, timeout=600, max_retries=0)
    seen = {"models": sorted(m.id for m in client.models.list().data)}

    plain = client.chat.completions.create(
        model=creator,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hey you, what are you drinking tonight?"},
        ],
        temperature=0.9,
        max_tokens=16,
    )
    seen["plain"] = {
        "model": plain.model,
        "content": plain.choices[0].message.content,
        "finish_reason": plain.choices[0].finish_reason,
        "usage": plain.usage.model_dump(),
    }

    fan = "sdk-fan"
    first = client.chat.completions.create(
        model=creator,
        user=fan,
        messages=[{"role": "user", "content": "hi! dana here, i just got back from a run"}],
    )
    chunks = []
    stream = client.chat.completions.create(
        model=creator,
        messages=[
            {"role": "user", "content": "hi! dana here, i just got back from a run"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "what should i cook tonight?"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-OpenWebUI-User-Id": fan},
    )
    for chunk in stream:
        chunks.append(chunk.model_dump())
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    seen["stream"] = {
        "text": text,
        "chunks": len(chunks),
        "role": chunks[0]["choices"][0]["delta"].get("role") if chunks else None,
        "finish_reasons": finish,
        "usage": chunks[-1].get("usage") if chunks else None,
        "first_reply": first.choices[0].message.content,
    }
    seen["history"] = history(base, token, creator, fan)

    second = client.chat.completions.create(
        model=other, user=fan, messages=[{"role": "user", "content": "hi, who is this?"}]
    )
    seen["other"] = {
        "model": second.model,
        "content": second.choices[0].message.content,
        "history": history(base, token, other, fan),
    }

    wrong_key = openai.OpenAI(base_url=base, api_key="wrong", max_retries=0)
    seen["errors"] = {
        "unknown_model": error_of(
            lambda: client.chat.completions.create(
                model="nobody", messages=[{"role": "user", "content": "hi"}]
            )
        ),
        "stream_n2": error_of(
            lambda: client.chat.completions.create(
                model=creator, n=2, stream=True, messages=[{"role": "user", "content": "hi"}]
            )
        ),
        "wrong_key": error_of(lambda: wrong_key.models.list()),
    }
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
