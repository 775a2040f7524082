"""Write the plugin's embedded data: ``resources/tales.txt`` and ``resources/chat.json``.

Both are generated from templates written for this project (no third-party text), with a fixed
seed, so running this script again gives the same bytes. They exist so that ``gentool train gpt``
and the SFT tests work with no download and no ``--data``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "gentool_gpt" / "resources"

ANIMALS = ["fox", "crow", "hare", "tortoise", "lion", "mouse", "wolf", "lamb", "ant", "grasshopper", "owl",
           "goat", "heron", "frog", "bear", "badger", "sparrow", "cat", "dog", "horse", "deer", "otter"]
ADJ = ["clever", "proud", "patient", "hungry", "old", "young", "greedy", "kind", "lazy", "brave", "quiet",
       "foolish", "wise", "small", "swift", "gentle", "boastful", "honest", "tired", "curious"]
PLACES = ["by the river", "in the dark wood", "on the hill", "at the edge of the field", "near the old mill",
          "under the oak tree", "in the meadow", "beside the well", "on the frozen lake", "in the valley",
          "at the farmer's gate", "among the reeds", "on the mountain path", "in the orchard"]
SEASONS = ["one spring morning", "on a hot summer day", "late in the autumn", "in the depth of winter",
           "one evening", "at dawn", "after a long rain", "on the first day of the harvest"]
WANTS = ["a piece of cheese", "a bunch of grapes", "a warm place to sleep", "the sweetest clover",
         "a drink of clear water", "the nest of golden straw", "the last apple of the year", "a safe road home",
         "the honey in the hollow log", "a friend to talk to", "the shining stone", "a crust of bread"]
ACTIONS = ["laughed at", "helped", "tricked", "ignored", "raced", "warned", "followed", "praised", "chased",
           "shared with", "argued with", "waited for"]
TRICKS = ["flattered", "begged", "boasted to", "promised a gift to", "challenged", "asked for help from"]
OUTCOMES = [
    "but in the end it lost everything it had gained.",
    "and so it learned that haste brings little.",
    "and the two of them lived in peace from that day on.",
    "yet nobody believed it when the danger was real.",
    "and it went home with nothing but a lesson.",
    "and it was glad, for a small gift freely given is worth much.",
    "and the others never forgot its kindness.",
    "but the winter came, and it had stored nothing.",
]
MORALS = ["Slow and steady wins the race.", "Do not trust flatterers.", "A friend in need is a friend indeed.",
          "Look before you leap.", "Pride goes before a fall.", "Little by little does the trick.",
          "Work today, and you will eat tomorrow.", "Kindness is never wasted.",
          "Those who boast are seldom the ones who do.", "It is easy to despise what you cannot get.",
          "Honesty is the best policy.", "United we stand, divided we fall.",
          "Do not count your chickens before they are hatched.", "Gratitude is the sign of noble souls."]
SPEECH = ["\"Good day to you,\" said the {a}. \"Where are you going in such a hurry?\"",
          "\"I have no time to talk,\" answered the {b}. \"I must find {w} before night.\"",
          "\"Why work so hard?\" asked the {a}. \"There is plenty for everyone.\"",
          "\"Help me, friend,\" cried the {b}, \"and one day I shall help you.\"",
          "\"You are the finest {b} in all the land,\" said the {a} with a bow.",
          "\"I will not be fooled twice,\" said the {b}, and it turned away.",
          "\"Let us see who is faster,\" said the {a}. \"The first to reach the well wins.\"",
          "\"Thank you,\" said the {b} softly. \"I shall not forget this.\""]


def a_(word: str) -> str:
    return ("an " if word[0] in "aeiouh" and word not in ("hungry", "hare", "heron", "horse") else "a ") + word


def tale(rng: random.Random, n: int) -> str:
    a, b = rng.sample(ANIMALS, 2)
    adj_a, adj_b = rng.sample(ADJ, 2)
    w = rng.choice(WANTS)
    title = f"{n}. The {adj_a.title()} {a.title()} and the {b.title()}"
    lines = [title, ""]
    para = (f"{rng.choice(SEASONS).capitalize()}, {a_(adj_a)} {a} was walking {rng.choice(PLACES)}. "
            f"It wanted {w} more than anything. There it met {a_(adj_b)} {b}, who {rng.choice(ACTIONS)} it.")
    lines.append(para)
    talk = rng.sample(SPEECH, rng.randint(2, 4))
    lines.append(" ".join(s.format(a=a, b=b, w=w) for s in talk))
    para2 = (f"The {a} {rng.choice(TRICKS)} the {b}, and the {b} {rng.choice(ACTIONS)} the {a} "
             f"{rng.choice(PLACES)}, {rng.choice(OUTCOMES)}")
    lines.append(para2)
    lines.append(f"Moral: {rng.choice(MORALS)}")
    return "\n".join(lines) + "\n\n"


def chats(rng: random.Random, count: int) -> list[dict]:
    out = []
    colours = {"grass": "green", "the sky": "blue", "snow": "white", "coal": "black", "a ripe tomato": "red",
               "a banana": "yellow", "an orange": "orange"}
    for _ in range(count):
        turns = [{"role": "system", "content": "You are a helpful assistant who answers briefly."}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            kind = rng.randrange(4)
            if kind == 0:
                x, y = rng.randint(1, 20), rng.randint(1, 20)
                q, r = f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."
            elif kind == 1:
                thing, col = rng.choice(list(colours.items()))
                q, r = f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {col}."
            elif kind == 2:
                m = rng.choice(MORALS)
                q, r = "Tell me a moral from a fable.", f"Here is one: {m}"
            else:
                a = rng.choice(ANIMALS)
                q, r = f"Say hello to the {a}.", f"Hello, {a}! I hope you are well."
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
        out.append({"messages": turns})
    return out


def main() -> None:
    rng = random.Random(20260101)
    OUT.mkdir(parents=True, exist_ok=True)
    text, n = [], 1
    while sum(len(t) for t in text) < 300_000:
        text.append(tale(rng, n))
        n += 1
    (OUT / "tales.txt").write_text("".join(text), encoding="utf-8")
    (OUT / "chat.json").write_text(json.dumps(chats(rng, 400), indent=0), encoding="utf-8")


if __name__ == "__main__":
    main()
