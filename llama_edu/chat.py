"""Chat formats: how a conversation becomes token ids for Llama-2-Chat and Llama 3 (lessons
13 and 15).

A dialog is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`:
an optional system message first, then user and assistant turns alternating, ending with
the user message the model should answer.

Llama 2 (Touvron et al., 2023, §3; Meta's reference `chat_completion`): the system message
is wrapped in <<SYS>> tags and put in front of the first user message; every finished
exchange is one sequence `<s>[INST] user [/INST] answer </s>`, and the open question is
`<s>[INST] user [/INST]`, after which the model writes its answer.

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>
    <s>[INST] {user} [/INST]

Llama 3 (Meta's reference `ChatFormat`): each message gets a header with its role and ends
in <|eot_id|>; the prompt ends with an empty assistant header.

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n{user}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n
"""

from __future__ import annotations

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
ROLES = ("system", "user", "assistant")


def check_dialog(dialog) -> list[dict]:
    """The dialog as a list of {"role", "content"} dicts, or a ValueError that says what is
    wrong: roles must alternate user, assistant, ... after an optional system message and
    end with the user's turn."""
    if not isinstance(dialog, (list, tuple)) or not dialog:
        raise ValueError("a dialog is a non-empty list of {'role': ..., 'content': ...} "
                         f"messages, got {dialog!r}")
    messages = []
    for i, message in enumerate(dialog):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f"message {i} must be a dict with exactly 'role' and 'content', "
                             f"got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"message {i} has role {message['role']!r}; use one of {ROLES}")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i}'s content must be a str, got "
                             f"{type(message['content']).__name__}")
        messages.append(dict(message))
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            where = i + len(messages) - len(turns)
            hint = (" (only the first message may be the system message)"
                    if message["role"] == "system" else "")
            raise ValueError(f"message {where} is {message['role']!r} but should be "
                             f"{expected!r}: after an optional system message, roles "
                             f"alternate user, assistant, user, ...{hint}")
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the dialog must end with a user message, which the model answers")
    return messages


def _llama2_exchanges(dialog) -> list[tuple[str, str | None]]:
    """(user text, answer text or None for the open question), system folded in."""
    messages = check_dialog(dialog)
    if messages[0]["role"] == "system":
        system, first = messages[0], messages[1]
        first = {"role": "user", "content": B_SYS + system["content"] + E_SYS + first["content"]}
        messages = [first] + messages[2:]
    users, answers = messages[0::2], messages[1::2]
    exchanges = [(u["content"].strip(), a["content"].strip())
                 for u, a in zip(users, answers, strict=False)]
    exchanges.append((users[-1]["content"].strip(), None))
    return exchanges


def format_dialog(dialog) -> str:
    """The Llama 2 chat prompt as text, with <s> and </s> where the ids BOS and EOS go."""
    parts = []
    for user, answer in _llama2_exchanges(dialog):
        if answer is None:
            parts.append(f"<s>{B_INST} {user} {E_INST}")
        else:
            parts.append(f"<s>{B_INST} {user} {E_INST} {answer} </s>")
    return "".join(parts)


def encode_dialog(tokenizer, dialog) -> list[int]:
    """The Llama 2 chat prompt as token ids, as Meta's `chat_completion` builds them: each
    exchange encoded on its own with BOS (and EOS after a finished answer)."""
    ids: list[int] = []
    for user, answer in _llama2_exchanges(dialog):
        if answer is None:
            ids += tokenizer.encode(f"{B_INST} {user} {E_INST}", bos=True, eos=False)
        else:
            ids += tokenizer.encode(f"{B_INST} {user} {E_INST} {answer} ", bos=True, eos=True)
    return ids


# ---------------------------------------------------------------------------------------
# Llama 3

def _llama3_header(tokenizer, role: str) -> list[int]:
    special = tokenizer.special_ids
    return ([special["<|start_header_id|>"]] + tokenizer.encode(role, special=False)
            + [special["<|end_header_id|>"]] + tokenizer.encode("\n\n", special=False))


def encode_dialog_llama3(tokenizer, dialog) -> list[int]:
    """The Llama 3 chat prompt as token ids, as Meta's `ChatFormat` builds them: each
    message is a header with its role, its stripped content and <|eot_id|>; the prompt ends
    with the assistant's empty header. `tokenizer` is a byte-level BPE with Llama 3's
    special tokens (`llama_edu.tokenizer.load_llama3_tokenizer()`); text that looks like a
    special token inside a message is encoded as plain text."""
    messages = check_dialog(dialog)
    special = tokenizer.special_ids
    missing = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>"} - set(special)
    if missing:
        raise ValueError(f"the tokenizer lacks Llama 3's special tokens {sorted(missing)}; "
                         "use llama_edu.tokenizer.load_llama3_tokenizer()")
    ids = [special["<|begin_of_text|>"]]
    for message in messages:
        ids += _llama3_header(tokenizer, message["role"])
        ids += tokenizer.encode(message["content"].strip(), special=False)
        ids.append(special["<|eot_id|>"])
    return ids + _llama3_header(tokenizer, "assistant")


# ---------------------------------------------------------------------------------------
# A chat in the terminal (python -m llama_edu chat)

EXIT = "/exit"


def fit_dialog(tokenizer, dialog: list[dict], room: int) -> tuple[list[dict], list[int]]:
    """Drop the oldest finished exchanges (the system message stays) until the encoded
    prompt leaves `room` positions free of the model's max_seq_len: (dialog, ids)."""
    while True:
        ids = encode_dialog(tokenizer, dialog)
        first = 1 if dialog[0]["role"] == "system" else 0
        if len(ids) <= room or len(dialog) - first < 3:
            return dialog, ids
        dialog = dialog[:first] + dialog[first + 2:]


def chat_session(model, tokenizer, lines, out, *, system: str | None = None,
                 max_new_tokens: int = 64, temperature: float = 0.0, top_p: float | None = None,
                 seed: int = 0, interactive: bool = False) -> list[dict]:
    """Talk: each line of `lines` is a user message; each answer is streamed to `out`
    token by token (KV cache, `llama_edu.generate.stream`). Ends at the end of the input
    or at /exit. Returns the dialog."""
    import torch

    from .generate import stream, text_pieces

    dialog = [] if system is None else [{"role": "system", "content": system}]
    generator = torch.Generator(model.embed_tokens.weight.device).manual_seed(seed)
    room = model.config.max_seq_len - max_new_tokens
    if room < 8:
        raise ValueError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in "
                         f"the model's {model.config.max_seq_len} positions")
    if interactive:
        out.write(f"Chatting with a {model.config.dim}-wide Llama; {EXIT} or Ctrl-D ends.\n")
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line or line.strip() == EXIT:
            break
        message = line.strip()
        if not message:
            continue
        dialog, ids = fit_dialog(tokenizer, dialog + [{"role": "user", "content": message}],
                                 room)
        if len(ids) > room:
            out.write(f"(that message is {len(ids)} tokens with the chat format; this model "
                      f"reads at most {room} before its answer: shorten it)\n")
            dialog = dialog[:-1]
            continue
        if interactive:
            out.write("llama> ")
        pieces = []
        new_ids = stream(model, ids, max_new_tokens, temperature, None, top_p,
                         tokenizer.eos_id, generator=generator)
        for piece in text_pieces(tokenizer, ids, new_ids):
            if not "".join(pieces):                  # the answer's leading space
                piece = piece.lstrip()
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        dialog.append({"role": "assistant", "content": "".join(pieces).strip()})
    if interactive:
        out.write("\n")
    return dialog
