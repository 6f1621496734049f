"""Corpora that need no network, the course tokenizer, and batching (lesson 10).

Three sources of text, none downloaded:

- `pydoc_text()`: the English prose that ships with Python (about 465 KB, the help texts
  of `pydoc_data.topics`);
- `story_text(n_stories, seed)`: short stories from a seeded generator written for this
  course (varied characters, places, plots and numbers, with a few sentences in Chinese so
  that non-ASCII text goes through every step);
- `read_text_file(path)`: any UTF-8 text file a learner brings.

`course_text()` joins the first two; `train_tokenizer` fits the course's SentencePiece BPE
model (byte fallback and split digits, like Llama's) on it, and `TokenDataset` holds the
token stream split into training and validation parts, sampled as random windows.
`byte_tokens` (256 byte ids) serves the quick experiments of lessons 02-04.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------
# Python's own documentation


def pydoc_text() -> str:
    """Python's own help topics as one English text, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


# ---------------------------------------------------------------------------------------
# A procedural story generator: a small grammar of characters, places, things and plots.

_NAMES = ["Mira", "Tomas", "Lena", "Oskar", "Ada", "Felix", "Nora", "Hugo", "Ines", "Pavel",
          "Rosa", "Kenji", "Amara", "Leo", "Sofia", "Bram", "Yuki", "Omar", "Greta", "Ivo",
          "Lucia", "Emil", "Zara", "Milo", "Hana", "Ravi", "Elsa", "Teo", "Wren", "Jonah",
          "Priya", "Otto", "Clara", "Samir", "Iris", "Finn", "Maya", "Arlo", "Vera", "Kofi"]
_KINDS = [("fox", "狐狸"), ("rabbit", "兔子"), ("baker", "面包师"), ("sailor", "水手"),
          ("owl", "猫头鹰"), ("girl", "女孩"), ("boy", "男孩"), ("farmer", "农夫"),
          ("robot", "机器人"), ("cat", "小猫"), ("dragon", "小龙"), ("teacher", "老师"),
          ("painter", "画家"), ("mouse", "老鼠"), ("bear", "熊"), ("gardener", "园丁"),
          ("fisherman", "渔夫"), ("turtle", "乌龟"), ("clockmaker", "钟表匠"),
          ("doctor", "医生"), ("squirrel", "松鼠"), ("musician", "音乐家"),
          ("hedgehog", "刺猬"), ("librarian", "图书管理员"), ("goat", "山羊"),
          ("pilot", "飞行员"), ("duck", "鸭子"), ("tailor", "裁缝")]
_TRAITS = ["brave", "shy", "curious", "clever", "grumpy", "kind", "lazy", "cheerful",
           "careful", "clumsy", "patient", "proud", "quiet", "restless", "gentle", "stubborn",
           "forgetful", "honest", "nervous", "generous", "old", "young", "tiny", "tall"]
_PLACES = ["a village by a slow river", "a busy harbour town", "a library under a hill",
           "a farm at the edge of the forest", "a city of tall glass towers",
           "an island with one lighthouse", "a bakery on a narrow street",
           "a school beside the railway", "a valley full of windmills",
           "a market that opened only at night", "a garden behind a stone wall",
           "a snowy mountain pass", "a houseboat on a canal", "a desert oasis",
           "a workshop full of clocks", "a space station far above the clouds",
           "a castle with a broken bridge", "a meadow where bees hummed all day"]
_THINGS = [("a brass key", "钥匙"), ("a blue kite", "风筝"), ("a red ball", "红色的球"),
           ("an old map", "地图"), ("a silver spoon", "勺子"), ("a music box", "音乐盒"),
           ("a paper lantern", "灯笼"), ("a wooden boat", "木船"), ("a jar of honey", "蜂蜜"),
           ("a green umbrella", "雨伞"), ("a pocket watch", "怀表"), ("a bag of seeds", "种子"),
           ("a striped scarf", "围巾"), ("a broken compass", "指南针"), ("a tin drum", "鼓"),
           ("a letter with no name", "信"), ("a basket of pears", "梨"),
           ("a small telescope", "望远镜"), ("a golden feather", "羽毛"),
           ("a box of crayons", "蜡笔")]
_WEATHER = ["The morning was bright and cold.", "Rain tapped on every roof.",
            "A warm wind came from the south.", "Fog hid the tops of the trees.",
            "The sun was low and orange.", "Snow had fallen in the night.",
            "Thunder rolled somewhere far away.", "It was the hottest day of the summer."]
_FEELINGS = ["happy", "worried", "surprised", "tired", "proud", "sad", "excited", "calm",
             "confused", "grateful"]
_CN_ENDINGS = ["大家都很高兴。", "这是一个美好的一天。", "朋友们一起回家了。",
               "从那以后，他们每天都在一起玩。", "故事结束了。", "天黑了，星星出来了。"]


@dataclass
class _Character:
    name: str
    kind: str
    kind_cn: str
    trait: str

    @property
    def described(self) -> str:          # "a shy fox"
        article = "an" if self.trait[0] in "aeiou" else "a"
        return f"{article} {self.trait} {self.kind}"

    @property
    def intro(self) -> str:              # "a shy fox named Mira"
        return f"{self.described} named {self.name}"


def _character(rng: random.Random, avoid: str = "") -> _Character:
    name = rng.choice([n for n in _NAMES if n != avoid])
    kind, kind_cn = rng.choice(_KINDS)
    return _Character(name, kind, kind_cn, rng.choice(_TRAITS))


def _plot_lost(rng, hero, friend, thing, place):
    spot = rng.choice(["under the bed", "behind the bookshelf", "in the tall grass",
                       "at the bottom of the well", "inside an empty teapot", "on the roof"])
    tries = rng.randint(2, 9)
    return [f"One day {hero.name} lost {thing}.",
            f"{hero.name} looked everywhere, {tries} times over, but could not find it.",
            f'"Have you seen {thing}?" {hero.name} asked {friend.name}, {friend.described}.',
            f'"No," said {friend.name}, "but I will help you look."',
            f"Together they searched until they found it {spot}.",
            f"{hero.name} felt {rng.choice(_FEELINGS)} and thanked {friend.name}."]


def _plot_journey(rng, hero, friend, thing, place):
    days = rng.randint(2, 12)
    goal = rng.choice(_PLACES)
    return [f"{hero.name} decided to travel to {goal}.",
            f"The trip took {days} days, and {hero.name} carried only {thing}.",
            f"On the way, {hero.name} met {friend.intro}, who was {rng.choice(_FEELINGS)}.",
            f'"Where are you going?" asked {friend.name}.',
            f'"Far away," said {hero.name}. "Will you come with me?"',
            "They walked side by side, and the road felt shorter with two.",
            f"When they arrived, the air smelled of {rng.choice(['salt', 'pine', 'bread'])}."]


def _plot_contest(rng, hero, friend, thing, place):
    score, other = rng.randint(10, 99), rng.randint(10, 99)
    event = rng.choice(["a race", "a baking contest", "a kite festival", "a spelling match",
                        "a singing contest", "a chess game"])
    winner, loser = (hero, friend) if score >= other else (friend, hero)
    return [f"There was {event} in the town square.",
            f"{hero.name} practised every evening with {thing}.",
            f"{friend.name}, {friend.described}, practised too.",
            f"In the end {hero.name} scored {score} points and {friend.name} scored {other}.",
            f"{winner.name} won, and {loser.name} was the first to say well done.",
            f'"Next year I will win," said {loser.name}, and everyone laughed.']


def _plot_build(rng, hero, friend, thing, place):
    build = rng.choice(["a treehouse", "a raft", "a bridge of rope", "a clock tower",
                        "a small garden", "a sled", "a bird feeder"])
    parts = rng.randint(3, 40)
    return [f"{hero.name} wanted to build {build}.",
            f"The plan needed {parts} pieces of wood and {thing}.",
            f"The first try fell apart, and {hero.name} felt {rng.choice(_FEELINGS)}.",
            f"{friend.name} the {friend.kind} came by and pointed at the weak corner.",
            f'"Try it this way," said {friend.name}.',
            f"The second try held, and {build} stood for many years."]


def _plot_storm(rng, hero, friend, thing, place):
    hour = rng.randint(1, 12)
    return [f"At {hour} o'clock a storm began.",
            f"{friend.name} was stuck on the far side of the river.",
            f"{hero.name} was {hero.trait}, but this time {hero.name} did not wait.",
            f"With {thing} in hand, {hero.name} crossed the old bridge in the rain.",
            f"{friend.name} was cold and {rng.choice(_FEELINGS)}, but safe.",
            "By morning the storm was gone, and the river was quiet again."]


def _plot_mystery(rng, hero, friend, thing, place):
    count = rng.randint(2, 30)
    culprit = rng.choice(["a hungry crow", "the wind", "a family of mice",
                          "a sleepwalking goat", "a curious child", "the neighbour's dog"])
    return [f"Every night, {count} cookies went missing from the kitchen.",
            f"{hero.name} and {friend.name} hid behind the door to watch.",
            f"At midnight they heard a small noise near {thing}.",
            f"It was {culprit}!",
            f"{hero.name} laughed and left a plate out every night after that."]


def _plot_lesson(rng, hero, friend, thing, place):
    skill = rng.choice(["to swim", "to read", "to play the violin", "to bake bread",
                        "to ride a bicycle", "to count to 100", "to draw maps"])
    weeks = rng.randint(2, 20)
    return [f"{hero.name} could not yet know how {skill}.",
            f"{friend.name} offered to teach, using {thing} as a reward.",
            f"It took {weeks} weeks of trying, failing and trying again.",
            f"At last {hero.name} learned {skill}, and felt {rng.choice(_FEELINGS)}.",
            f'"Now you can teach someone else," said {friend.name}.']


_PLOTS = [_plot_lost, _plot_journey, _plot_contest, _plot_build, _plot_storm, _plot_mystery,
          _plot_lesson]


def make_story(rng: random.Random) -> str:
    """One short story: an opening, a plot drawn from seven, sometimes a Chinese ending."""
    hero = _character(rng)
    friend = _character(rng, avoid=hero.name)
    thing, thing_cn = rng.choice(_THINGS)
    place = rng.choice(_PLACES)
    opening = rng.choice(["Once upon a time", "Long ago", "Not so long ago", "Last spring",
                          "In a year nobody remembers"])
    lines = [f"{opening}, in {place}, there lived {hero.intro}.", rng.choice(_WEATHER)]
    lines += rng.choice(_PLOTS)(rng, hero, friend, thing, place)
    if rng.random() < 0.08:          # non-ASCII text, end to end
        lines.append(f"{hero.kind_cn}和{friend.kind_cn}找到了{thing_cn}。"
                     + rng.choice(_CN_ENDINGS))
    else:
        lines.append(rng.choice(["The end.", "And that was that.",
                                 f"{hero.name} never forgot that day.",
                                 "They still talk about it today."]))
    return " ".join(lines)


def story_text(n_stories: int = 3000, seed: int = 0) -> str:
    """`n_stories` stories, separated by blank lines, from a generator seeded with `seed`."""
    if n_stories < 1:
        raise ValueError(f"n_stories must be at least 1, got {n_stories}")
    rng = random.Random(seed)
    return "\n\n".join(make_story(rng) for _ in range(n_stories))


def course_text(n_stories: int = 3000, seed: int = 0) -> str:
    """The course corpus: Python's help topics, then the generated stories."""
    return pydoc_text() + "\n\n" + story_text(n_stories, seed)


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file, with a clear error for a missing file or other bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {str(path)!r}; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {error.start} cannot be "
                         "decoded); convert it to UTF-8 first") from None
    if not text.strip():
        raise ValueError(f"{str(path)!r} is empty; give a file with some text")
    return text


def load_corpus(source: str = "course") -> str:
    """'course', 'pydoc', 'stories', or the path of a UTF-8 text file."""
    if source == "course":
        return course_text()
    if source == "pydoc":
        return pydoc_text()
    if source == "stories":
        return story_text()
    return read_text_file(source)


# ---------------------------------------------------------------------------------------
# The course tokenizer: SentencePiece BPE like Llama's (Touvron et al., 2023)

TOKENIZER_OPTIONS = dict(
    model_type="bpe", vocab_size=4096, byte_fallback=True, split_digits=True,
    normalization_rule_name="identity", add_dummy_prefix=True,
    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    character_coverage=0.9995, max_sentence_length=16384, input_sentence_size=0,
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
)


def train_tokenizer(path: str | os.PathLike, text: str | None = None,
                    vocab_size: int = 4096) -> Path:
    """Fit a SentencePiece BPE model on `text` (default: the course corpus); write `path`.

    Llama's settings: BPE, byte fallback (any UTF-8 text encodes, unknown characters become
    <0xNN> byte pieces), digits split one by one, no Unicode normalisation. One thread and
    every input line, so the same text always gives the same model file.
    """
    import io

    import sentencepiece as spm

    text = course_text() if text is None else text
    lines = [line for line in text.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                   **{**TOKENIZER_OPTIONS, "vocab_size": vocab_size})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.getvalue())
    os.replace(tmp, path)
    return path


def load_tokenizer(path: str | os.PathLike):
    """The course tokenizer from a SentencePiece model file: the course's own
    `llama_edu.tokenizer.SentencePieceBPE` (lesson 01), id for id equal to sentencepiece.

    It offers encode(text, bos=False, eos=False), decode(ids), id_to_piece(i), vocab_size,
    bos_id and eos_id.
    """
    from .tokenizer import SentencePieceBPE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer model at {str(path)!r}; train one with "
                                "llama_edu.data.train_tokenizer(path)")
    return SentencePieceBPE.from_file(path)


def encode_text(tokenizer, text: str) -> Tensor:
    """The text as one token stream, BOS before every paragraph (blank-line separated,
    as Llama marks the start of each document).   -> (n_tokens,) int64"""
    ids: list[int] = []
    for paragraph in text.split("\n\n"):
        if paragraph.strip():
            ids += tokenizer.encode(paragraph, bos=True)
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------------------
# Byte tokens and batching


def byte_tokens(text: str) -> Tensor:
    """UTF-8 bytes of the text as ids in [0, 256).   -> (n_bytes,) int64"""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def random_batch(tokens: Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random windows of seq_len + 1 tokens: inputs and next-token targets.

    -> x, y each (batch_size, seq_len), y[:, t] = x[:, t + 1] in the original stream
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
    if len(tokens) < seq_len + 2:
        raise ValueError(f"the stream has {len(tokens)} tokens, too few for windows of "
                         f"seq_len={seq_len}; use a shorter seq_len or more text")
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


class TokenDataset:
    """A token stream split into a training part and a validation part.

    `from_text` holds out every k-th paragraph (k = 1 / val_fraction), so the validation
    text comes from every source in the corpus and no window straddles the two parts.
    """

    def __init__(self, train: Tensor, val: Tensor):
        self.train = self._stream(train, "train")
        self.val = self._stream(val, "val")

    @staticmethod
    def _stream(tokens, name: str) -> Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 1:
            raise ValueError(f"{name} tokens must be a 1-D stream, got shape "
                             f"{tuple(tokens.shape)}")
        return tokens

    @classmethod
    def from_text(cls, text: str, tokenizer, val_fraction: float = 0.05) -> TokenDataset:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got "
                             f"{val_fraction}")
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        every = max(2, round(1 / val_fraction))
        if len(paragraphs) < every:          # too few paragraphs: hold out the end instead
            tokens = encode_text(tokenizer, text)
            n_val = max(1, int(len(tokens) * val_fraction))
            return cls(tokens[:-n_val], tokens[-n_val:])
        train = [p for i, p in enumerate(paragraphs) if i % every != every - 1]
        val = [p for i, p in enumerate(paragraphs) if i % every == every - 1]
        return cls(encode_text(tokenizer, "\n\n".join(train)),
                   encode_text(tokenizer, "\n\n".join(val)))

    def batch(self, split: str, batch_size: int, seq_len: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Random windows from 'train' or 'val'.   -> x, y each (batch_size, seq_len)"""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return random_batch(self.train if split == "train" else self.val, batch_size,
                            seq_len, generator)

    def __repr__(self) -> str:
        return f"TokenDataset(train={len(self.train):,} tokens, val={len(self.val):,} tokens)"
