"""A seeded generator of short stories, the course's own training text (lesson 10).

A small grammar: a hero and a friend (a name, a kind of creature or trade, a trait), a
place, a thing, the weather, and one of seven plots (something lost, a journey, a contest,
a build, a storm, a mystery, a lesson), with numbers drawn at random. About one story in
twelve ends with a sentence in Chinese, so non-ASCII text goes through every step of the
pipeline. The same seed always gives the same stories.

    >>> story_text(1, seed=7)[:44]
    'In a year nobody remembers, in a snowy mount'
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Story:
    """A story and the facts it states, for questions about it (lesson 13's data)."""

    text: str
    hero: str          # a name: "Mira"
    kind: str          # "fox"
    kind_cn: str       # "狐狸"
    described: str     # "a shy fox"
    place: str         # "a village by a slow river"
    thing: str         # "a brass key"
    friend: str = ""           # the second character's name: "Kenji"
    friend_kind: str = ""      # "turtle" (the text names it in some plots only)
    friend_kind_cn: str = ""   # "乌龟"
    friend_described: str = ""  # "a calm turtle"


def make_story(rng: random.Random) -> str:
    """One short story: an opening, a plot drawn from seven, sometimes a Chinese ending."""
    return tell_story(rng).text


def tell_story(rng: random.Random) -> Story:
    """`make_story`'s story with its facts (the same text for the same generator state)."""
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
    return Story(" ".join(lines), hero.name, hero.kind, hero.kind_cn, hero.described, place,
                 thing, friend.name, friend.kind, friend.kind_cn, friend.described)


def story_text(n_stories: int = 3000, seed: int = 0) -> str:
    """`n_stories` stories, separated by blank lines, from a generator seeded with `seed`."""
    if n_stories < 1:
        raise ValueError(f"n_stories must be at least 1, got {n_stories}")
    rng = random.Random(seed)
    return "\n\n".join(make_story(rng) for _ in range(n_stories))
