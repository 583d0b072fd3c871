"""Regenerate ``corpus.txt``: deterministic, original prose for the training benchmark.

    python bench/data/make_corpus.py

A small grammar of village-chronicle sentences (all words and templates written for memfit, no
third-party text), expanded with a fixed seed into ~150 KB of plain ASCII: enough structure for a
byte-level model to learn within a few hundred steps, small enough to live in the repository.
"""

import random
from pathlib import Path

PEOPLE = ["the miller", "the old weaver", "a young shepherd", "the baker's daughter", "the ferryman",
          "the schoolmaster", "a travelling tinker", "the widow Hale", "the blacksmith", "two fishermen",
          "the parson", "a stranger from the hills", "the innkeeper", "the lamplighter", "Martha", "Thomas"]
PLACES = ["the mill pond", "the market square", "the north road", "the chapel yard", "the river ford",
          "the long meadow", "the harbour wall", "the orchard", "the old bridge", "the forge", "the inn"]
TIMES = ["At dawn", "Before the harvest", "In the grey of evening", "On the first cold morning",
         "When the bells had rung", "Late in the summer", "After the long rain", "On market day",
         "In the spring of that year", "Long before noon"]
VERBS = ["walked slowly to", "hurried down to", "looked out across", "waited quietly by", "came back from",
         "sang softly near", "spoke of", "remembered", "mended the fence beside", "carried bread to"]
THINGS = ["a basket of apples", "a letter sealed with wax", "an iron key", "a lantern", "three loaves",
          "a bundle of wool", "a silver coin", "an old map", "a pail of milk", "a small wooden box"]
FEELINGS = ["glad", "weary", "uneasy", "content", "silent", "hopeful", "troubled", "amused"]
SAYINGS = ["The river keeps its own counsel.", "Bread shared is bread doubled.",
           "A late frost spares no blossom.", "Good fences and open doors.",
           "The wind remembers every road.", "Patience grinds the finest flour."]


def sentence(rng: random.Random) -> str:
    kind = rng.randrange(6)
    who, where, what = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(THINGS)
    if kind == 0:
        return f"{rng.choice(TIMES)}, {who} {rng.choice(VERBS)} {where}."
    if kind == 1:
        return f"{who.capitalize()} brought {what} to {where}, and was {rng.choice(FEELINGS)}."
    if kind == 2:
        return f"\"Have you seen {what}?\" asked {who}. \"Only near {where},\" said {rng.choice(PEOPLE)}."
    if kind == 3:
        return f"No one in the village could say why {who} was {rng.choice(FEELINGS)} that day."
    if kind == 4:
        return f"As the old saying goes: {rng.choice(SAYINGS)}"
    return f"{who.capitalize()} {rng.choice(VERBS)} {where} and left {what} there."


def corpus(target_bytes: int = 150_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    paragraphs, size = [], 0
    while size < target_bytes:
        para = " ".join(sentence(rng) for _ in range(rng.randint(3, 7)))
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs) + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("corpus.txt")
    out.write_text(corpus(), encoding="ascii")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
