"""Generated container names: ``<adjective>_<surname>``, as docker makes them.

generate_name()   # "patient_hopper"
"""

from __future__ import annotations

import secrets

ADJECTIVES = (
    "agile", "amazing", "bold", "brave", "bright", "busy", "calm", "charming",
    "clever", "cool", "curious", "dazzling", "eager", "elated", "epic", "fervent",
    "fond", "friendly", "gallant", "gentle", "happy", "hardy", "humble", "jolly",
    "keen", "kind", "lively", "lucid", "merry", "modest", "nifty", "noble",
    "patient", "peaceful", "quirky", "quiet", "relaxed", "serene", "sharp",
    "steady", "sweet", "tender", "upbeat", "vibrant", "wise", "witty", "zealous",
)  # fmt: skip

SURNAMES = (
    "agnesi", "babbage", "bardeen", "bohr", "cannon", "curie", "darwin",
    "dijkstra", "einstein", "euler", "faraday", "fermi", "franklin", "galileo",
    "gauss", "goodall", "hamilton", "hawking", "hopper", "hypatia", "johnson",
    "kepler", "knuth", "lamarr", "leavitt", "lovelace", "maxwell", "meitner",
    "mendel", "newton", "noether", "pascal", "pasteur", "perlman", "planck",
    "ritchie", "sammet", "shannon", "swartz", "tesla", "thompson", "torvalds",
    "turing", "volta", "wilson", "wozniak", "yalow",
)  # fmt: skip


def generate_name() -> str:
    return f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
