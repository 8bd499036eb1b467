"""Varied English sentences from a small generative grammar, split into training and held-out sets.

Every word of the grammar can appear in training; the held-out sentences are word sequences that never
occur in the training set (checked by exact string), so the evaluation measures generalisation to new
sentences, not memorisation.
"""

from __future__ import annotations

import random
from collections.abc import Callable

PEOPLE = (
    "my brother", "my sister", "the teacher", "the doctor", "our neighbour", "the old man", "a young woman",
    "the children", "his mother", "her father", "the driver", "the farmer", "a little girl", "the boy",
    "my friend", "the captain", "the pilot", "the baker", "the nurse", "everyone", "nobody", "the students",
    "the team", "my uncle", "your aunt", "the manager", "a stranger", "the police", "the singer", "the cook",
)
PRONOUNS = ("i", "you", "we", "they", "he", "she")
THINGS = (
    "the book", "a letter", "the keys", "some bread", "the map", "a new car", "the red ball", "an apple",
    "the window", "the door", "a cup of tea", "the newspaper", "a bicycle", "the small box", "the camera",
    "a warm coat", "the green bottle", "the tickets", "a piece of cake", "the old chair", "the blue shirt",
    "a glass of water", "the radio", "the garden gate", "a wooden table", "the computer", "a basket of eggs",
    "the heavy bag", "a bunch of flowers", "the photograph", "the money", "a large pizza", "the clock",
    "the paper plane", "a pair of shoes", "the silver ring", "the guitar", "a bowl of soup", "the lamp",
)
PLACES = (
    "the station", "the market", "the beach", "the library", "the park", "the city", "the village",
    "the river", "the hospital", "the school", "the airport", "the museum", "the office", "the kitchen",
    "the garden", "the forest", "the mountains", "the bank", "the hotel", "the church", "the harbour",
    "the stadium", "the bridge", "the farm", "the island", "the castle", "the shop", "the valley",
)
TIMES = (
    "today", "yesterday", "tomorrow", "last night", "this morning", "every day", "on monday", "on friday",
    "at noon", "in the evening", "next week", "last summer", "in winter", "at midnight", "on sunday",
    "after lunch", "before dinner", "in april", "in october", "at seven", "this afternoon",
    "on tuesday", "on wednesday", "on thursday", "on saturday", "in the spring", "at dawn",
)
VERBS_PAST = (
    "found", "lost", "bought", "sold", "opened", "closed", "painted", "carried", "dropped", "washed",
    "cleaned", "moved", "brought", "wanted", "needed", "borrowed", "fixed", "broke", "hid", "took",
    "made", "saw", "liked", "kept", "gave away", "picked up", "looked at", "forgot",
)
VERBS_BASE = (
    "find", "buy", "sell", "open", "close", "paint", "carry", "wash", "clean", "move", "bring", "borrow",
    "fix", "take", "make", "see", "keep", "forget", "need", "want", "check", "hold", "read", "show",
)
MOTION = ("walked to", "drove to", "ran to", "went to", "travelled to", "came back from", "swam to",
          "cycled to", "flew to", "returned to", "hurried to", "sailed to")
ADJECTIVES = (
    "happy", "tired", "hungry", "cold", "warm", "quiet", "loud", "busy", "late", "early", "angry", "calm",
    "bright", "dark", "clean", "dirty", "strange", "beautiful", "careful", "ready", "sorry", "afraid",
    "famous", "lucky", "nervous", "proud", "sleepy", "strong", "wet", "young",
)
WEATHER = ("it was raining", "the wind was strong", "the sun was shining", "it was snowing",
           "the sky was grey", "it was very hot", "the fog was thick", "the air was cold")
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "twenty", "thirty", "forty", "fifty", "a hundred", "a thousand")
NOUNS_PLURAL = ("apples", "books", "chairs", "birds", "boats", "houses", "cars", "letters", "stones",
                "candles", "horses", "trees", "cups", "songs", "stars", "bottles", "pencils", "windows")
QUESTION_WORDS = ("where", "when", "why", "how")
CONNECTORS = ("and", "but", "because", "so", "while", "after", "before", "until")
ADVERBS = ("quickly", "slowly", "quietly", "carefully", "suddenly", "happily", "again", "together",
           "alone", "early", "late", "never", "always", "often", "sometimes")
CLOSERS = ("please", "thank you", "good morning", "good night", "see you soon", "excuse me",
           "of course", "not at all", "very well", "no problem")


def _clause(r: random.Random) -> str:
    who = r.choice(PEOPLE + PRONOUNS)
    pattern = r.randrange(9)
    if pattern == 0:
        return f"{who} {r.choice(VERBS_PAST)} {r.choice(THINGS)}"
    if pattern == 1:
        return f"{who} {r.choice(MOTION)} {r.choice(PLACES)} {r.choice(TIMES)}"
    if pattern == 2:
        return f"{who} {r.choice(VERBS_PAST)} {r.choice(THINGS)} at {r.choice(PLACES)}"
    if pattern == 3:
        verb = "were" if who in ("you", "we", "they", "the children", "the students", "the police") else "was"
        return f"{who} {verb} {r.choice(ADJECTIVES)} {r.choice(TIMES)}"
    if pattern == 4:
        return r.choice(WEATHER)
    if pattern == 5:
        return f"{who} {r.choice(MOTION)} {r.choice(PLACES)} {r.choice(ADVERBS)}"
    if pattern == 6:
        return f"there were {r.choice(NUMBERS)} {r.choice(NOUNS_PLURAL)} near {r.choice(PLACES)}"
    if pattern == 7:
        return f"{who} will {r.choice(VERBS_BASE)} {r.choice(THINGS)} {r.choice(TIMES)}"
    return f"{who} {r.choice(ADVERBS)} {r.choice(VERBS_PAST)} {r.choice(THINGS)}"


def _question(r: random.Random) -> str:
    pattern = r.randrange(4)
    if pattern == 0:
        return f"{r.choice(QUESTION_WORDS)} did {r.choice(PEOPLE + PRONOUNS)} {r.choice(VERBS_BASE)} {r.choice(THINGS)}"
    if pattern == 1:
        return f"can you {r.choice(VERBS_BASE)} {r.choice(THINGS)} {r.choice(TIMES)}"
    if pattern == 2:
        return f"is {r.choice(PLACES)} far from {r.choice(PLACES)}"
    return f"do you want {r.choice(NUMBERS)} {r.choice(NOUNS_PLURAL)}"


def _sentence(r: random.Random) -> str:
    kind = r.random()
    if kind < 0.45:
        return _clause(r)
    if kind < 0.75:
        return f"{_clause(r)} {r.choice(CONNECTORS)} {_clause(r)}"
    if kind < 0.9:
        return _question(r)
    if kind < 0.95:
        return f"{r.choice(CLOSERS)} {_clause(r)}"
    return f"{r.choice(CLOSERS)}"


def sentences(count: int, seed: int, exclude: frozenset[str] = frozenset(),
              make: Callable[[random.Random], str] = _sentence) -> list[str]:
    """``count`` distinct sentences (lower case, words separated by single spaces), none in ``exclude``."""
    r = random.Random(seed)
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        text = " ".join(make(r).split())
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def word_sequences(count: int, seed: int, exclude: frozenset[str] = frozenset(), max_words: int = 5) -> list[str]:
    """``count`` distinct sequences of 1 to ``max_words`` words of the grammar in random order, none in
    ``exclude``. Short, and with no grammar for the prediction network to learn, they make the encoder
    find the words in the audio: the curriculum starts with them."""
    words = sorted(vocabulary())

    def make(r: random.Random) -> str:
        return " ".join(r.choice(words) for _ in range(r.randint(1, max_words)))

    return sentences(count, seed, exclude, make)


def vocabulary() -> set[str]:
    """Every word the grammar can produce."""
    groups = (PEOPLE, PRONOUNS, THINGS, PLACES, TIMES, VERBS_PAST, VERBS_BASE, MOTION, ADJECTIVES, WEATHER,
              NUMBERS, NOUNS_PLURAL, QUESTION_WORDS, CONNECTORS, ADVERBS, CLOSERS)
    words = {w for group in groups for phrase in group for w in phrase.split()}
    return words | {"at", "will", "was", "were", "there", "near", "did", "can", "you", "is", "far", "from",
                    "do", "want"}
