"""Regenerate ``corpus.txt`` and ``ledger.txt``: deterministic, original text for the benchmarks.

    python bench/data/make_corpus.py

``corpus.txt``: a small grammar of village-chronicle sentences (all words and templates written
for memfit, no third-party text), expanded with a fixed seed into ~150 KB of plain ASCII: enough
structure for a byte-level model to learn within a few hundred steps, small enough to live in the
repository (``bench/lowrank_train.py`` pre-trains on it).

``ledger.txt``: the fine-tuning task of ``bench/lowrank_finetune.py``, a shifted distribution over
the same village: a trader's daily account book (dated entries, quantities, prices, running
balances), ~60 KB. Same people and places, new structure, digits and punctuation.
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


GOODS = ["sacks of barley", "bolts of linen", "jars of honey", "bundles of wool", "casks of cider",
         "loaves of rye", "pounds of salt", "candles", "iron nails", "baskets of apples"]
DEALS = ["Sold", "Sold", "Bought", "Bartered"]        # sales twice as often: the trader prospers


def ledger_entry(rng: random.Random, day: int, balance: int) -> tuple[str, int]:
    """One dated entry and the new balance (pence): a sale, a purchase or a toll, then the total."""
    count, price = rng.randint(2, 12), rng.randint(1, 9)
    deal, who, where = rng.choice(DEALS), rng.choice(PEOPLE), rng.choice(PLACES)
    amount = count * price
    if deal == "Sold":
        balance += amount
        line = f"Day {day}. Sold {count} {rng.choice(GOODS)} to {who} at {price}d each: +{amount}d."
    elif deal == "Bought":
        balance -= amount
        line = f"Day {day}. Bought {count} {rng.choice(GOODS)} from {who} at {price}d each: -{amount}d."
    else:
        line = f"Day {day}. Bartered {count} {rng.choice(GOODS)} with {who} for {rng.choice(THINGS)}."
    if rng.random() < 0.3:
        toll = rng.randint(1, 3)
        balance -= toll
        line += f" Toll at {where}: -{toll}d."
    return f"{line} Balance: {balance}d.", balance


def ledger(target_bytes: int = 60_000, seed: int = 1) -> str:
    rng = random.Random(seed)
    lines, size, balance, day = [], 0, 100, 1
    while size < target_bytes:
        line, balance = ledger_entry(rng, day, balance)
        lines.append(line)
        size += len(line) + 1
        day += rng.randint(0, 2)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for name, text in (("corpus.txt", corpus()), ("ledger.txt", ledger())):
        out = Path(__file__).with_name(name)
        out.write_text(text, encoding="ascii")
        print(f"wrote {out} ({out.stat().st_size} bytes)")
