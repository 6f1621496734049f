"""The course's story generator."""

import random

import pytest

from llama_edu.stories import make_story, story_text


def test_stories_are_seeded_varied_and_include_chinese():
    assert story_text(50, seed=3) == story_text(50, seed=3)
    assert story_text(50, seed=3) != story_text(50, seed=4)
    stories = story_text(2000).split("\n\n")
    assert len(stories) == 2000
    assert len(set(stories)) == 2000                      # no two stories alike
    openings = {s.split(",")[0] for s in stories}
    assert len(openings) >= 5
    assert sum("。" in s for s in stories) > 50           # some Chinese sentences
    words = set(" ".join(stories).split())
    assert len(words) > 800                               # a varied vocabulary
    assert any(ch.isdigit() for ch in stories[0] + stories[1] + stories[2] + stories[3])


def test_one_story_comes_from_the_generator_state():
    assert make_story(random.Random(5)) == make_story(random.Random(5))
    assert story_text(3, seed=5).split("\n\n")[0] == make_story(random.Random(5))
    with pytest.raises(ValueError, match="n_stories"):
        story_text(0)
