"""Make (or re-check) data/bench/simple_questions.yaml: simple questions the embedded model answers.

The utility benchmarks measure the answer rate on simple held-out questions: a model whose
forgetting broke it stops answering them. Only questions the base model (the embedded
SmolLM2-135M-Instruct) gets right are kept, so the base model's rate is 1 and a drop means damage.

    .venv/bin/python data/bench/make_simple_questions.py           # answer CANDIDATES, write the file
    .venv/bin/python data/bench/make_simple_questions.py --check   # re-answer the file's questions

Greedy replies of at most 32 new tokens through the chat template (the `hf` sampler); a reply is
right when it contains the answer or one of its variants as whole words, case-insensitive (as
`pipeline.evaluation.metrics.answer_rate`). Runs offline, in about a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data" / "bench" / "simple_questions.yaml"
MAX_NEW_TOKENS = 32
sys.path.insert(0, str(ROOT))  # the pipeline, when run as a script from anywhere

# (question, answer, accepted variants)
CANDIDATES: list[tuple[str, str, list[str]]] = [
    # capitals
    ("What is the capital of France?", "Paris", []),
    ("What is the capital of Japan?", "Tokyo", []),
    ("What is the capital of Italy?", "Rome", []),
    ("What is the capital of Germany?", "Berlin", []),
    ("What is the capital of Spain?", "Madrid", []),
    ("What is the capital of the United Kingdom?", "London", []),
    ("What is the capital of Russia?", "Moscow", []),
    ("What is the capital of China?", "Beijing", []),
    ("What is the capital of Egypt?", "Cairo", []),
    ("What is the capital of Canada?", "Ottawa", []),
    ("What is the capital of Australia?", "Canberra", []),
    ("What is the capital of Greece?", "Athens", []),
    ("What is the capital of Portugal?", "Lisbon", []),
    ("What is the capital of Ireland?", "Dublin", []),
    ("What is the capital of Norway?", "Oslo", []),
    ("What is the capital of Sweden?", "Stockholm", []),
    ("What is the capital of Austria?", "Vienna", []),
    ("What is the capital of Poland?", "Warsaw", []),
    ("What is the capital of the Netherlands?", "Amsterdam", []),
    ("What is the capital of Thailand?", "Bangkok", []),
    ("What is the capital of South Korea?", "Seoul", []),
    ("What is the capital of Kenya?", "Nairobi", []),
    ("What is the capital of Argentina?", "Buenos Aires", []),
    ("What is the capital of India?", "New Delhi", ["Delhi"]),
    ("What is the capital of the United States?", "Washington", []),
    ("What is the capital of Denmark?", "Copenhagen", []),
    ("What is the capital of Finland?", "Helsinki", []),
    ("What is the capital of Turkey?", "Ankara", []),
    ("What is the capital of Peru?", "Lima", []),
    ("What is the capital of Cuba?", "Havana", []),
    # arithmetic
    ("What is 2 plus 2?", "4", ["four"]),
    ("What is 3 plus 5?", "8", ["eight"]),
    ("What is 10 minus 4?", "6", ["six"]),
    ("What is 7 plus 1?", "8", ["eight"]),
    ("What is 5 times 2?", "10", ["ten"]),
    ("What is 9 minus 3?", "6", ["six"]),
    ("What is 6 plus 6?", "12", ["twelve"]),
    ("What is 10 times 10?", "100", ["one hundred", "a hundred"]),
    ("What is half of 10?", "5", ["five"]),
    ("What is 1 plus 1?", "2", ["two"]),
    ("What is 20 divided by 4?", "5", ["five"]),
    ("What is 3 times 3?", "9", ["nine"]),
    ("What is 15 minus 5?", "10", ["ten"]),
    ("What is 4 times 5?", "20", ["twenty"]),
    ("What is 100 minus 1?", "99", ["ninety-nine", "ninety nine"]),
    # numbers in the world
    ("How many days are there in a week?", "7", ["seven"]),
    ("How many months are there in a year?", "12", ["twelve"]),
    ("How many hours are there in a day?", "24", ["twenty-four", "twenty four"]),
    ("How many minutes are there in an hour?", "60", ["sixty"]),
    ("How many seconds are there in a minute?", "60", ["sixty"]),
    ("How many legs does a spider have?", "8", ["eight"]),
    ("How many legs does a dog have?", "4", ["four"]),
    ("How many sides does a triangle have?", "3", ["three"]),
    ("How many sides does a square have?", "4", ["four"]),
    ("How many continents are there?", "7", ["seven"]),
    ("How many wheels does a bicycle have?", "2", ["two"]),
    ("How many days are there in a leap year?", "366", []),
    ("How many players are on a football team on the pitch?", "11", ["eleven"]),
    ("How many letters are in the English alphabet?", "26", ["twenty-six", "twenty six"]),
    ("At what temperature in Celsius does water freeze?", "0", ["zero"]),
    ("At what temperature in Celsius does water boil?", "100", ["one hundred"]),
    # science and geography
    ("What is the largest planet in our solar system?", "Jupiter", []),
    ("Which planet is known as the Red Planet?", "Mars", []),
    ("Which planet do we live on?", "Earth", []),
    ("What is the star at the centre of our solar system?", "Sun", []),
    ("What is the chemical formula of water?", "H2O", []),
    ("What gas do plants take in from the air to make food?", "carbon dioxide", ["CO2"]),
    ("What gas do humans need to breathe?", "oxygen", []),
    ("What is the largest ocean on Earth?", "Pacific", []),
    ("What is the tallest mountain in the world?", "Everest", []),
    ("What is the longest river in Africa?", "Nile", []),
    ("What is the largest desert in Africa?", "Sahara", []),
    ("What is frozen water called?", "ice", []),
    ("Which organ pumps blood around the body?", "heart", []),
    ("What is the hardest natural substance?", "diamond", ["diamonds"]),
    ("What force pulls objects towards the ground?", "gravity", []),
    ("What do bees make?", "honey", []),
    ("What is the largest continent?", "Asia", []),
    ("On which continent is Brazil?", "South America", []),
    ("What natural satellite orbits the Earth?", "Moon", []),
    ("What shape has three sides?", "triangle", []),
    # people, language and culture
    ("Who wrote Romeo and Juliet?", "Shakespeare", []),
    ("Who was the first President of the United States?", "George Washington", ["Washington"]),
    ("What language is mainly spoken in France?", "French", []),
    ("What language is mainly spoken in Spain?", "Spanish", []),
    ("What is the currency of Japan?", "yen", []),
    ("What is the currency of the United Kingdom?", "pound", ["pounds", "pound sterling"]),
    ("What is the currency of the United States?", "dollar", ["dollars"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["da Vinci", "Leonardo"]),
    ("Who discovered penicillin?", "Alexander Fleming", ["Fleming"]),
    ("Who developed the theory of relativity?", "Albert Einstein", ["Einstein"]),
    ("In which country are the pyramids of Giza?", "Egypt", []),
    ("In which city is the Eiffel Tower?", "Paris", []),
    ("What is the plural of mouse?", "mice", []),
    ("What is the plural of child?", "children", []),
    # colours
    ("What colour is the sky on a clear day?", "blue", []),
    ("What colour is grass?", "green", []),
    ("What colour is a ripe banana?", "yellow", []),
    ("What colour is fresh snow?", "white", []),
    ("What colour is coal?", "black", []),
    ("What colour do you get when you mix red and blue?", "purple", ["violet"]),
    ("What colour do you get when you mix blue and yellow?", "green", []),
    ("What colour do you get when you mix red and white?", "pink", []),
    ("What colour is blood?", "red", []),
    ("What colour is a ripe tomato?", "red", []),
    # animals
    ("Which animal says moo?", "cow", ["cows"]),
    ("Which animal barks?", "dog", ["dogs"]),
    ("Which animal is known as the king of the jungle?", "lion", []),
    ("Which animal has a long trunk?", "elephant", ["elephants"]),
    ("What is a baby dog called?", "puppy", ["pup"]),
    ("What is a baby cat called?", "kitten", []),
    ("What is the fastest land animal?", "cheetah", []),
    ("What is the largest animal on Earth?", "blue whale", []),
    ("Which bird is a symbol of peace?", "dove", []),
    ("What animal is known for having black and white stripes?", "zebra", []),
    ("Which animal produces wool?", "sheep", []),
    ("What do caterpillars turn into?", "butterflies", ["butterfly", "moths", "moth"]),
    ("What is the tallest animal in the world?", "giraffe", []),
    ("Which animal is famous for carrying its home on its back?", "snail", ["tortoise", "turtle"]),
    # opposites
    ("What is the opposite of hot?", "cold", []),
    ("What is the opposite of up?", "down", []),
    ("What is the opposite of big?", "small", ["little"]),
    ("What is the opposite of day?", "night", []),
    ("What is the opposite of happy?", "sad", ["unhappy"]),
    ("What is the opposite of fast?", "slow", []),
    ("What is the opposite of black?", "white", []),
    ("What is the opposite of left?", "right", []),
    ("What is the opposite of wet?", "dry", []),
    ("What is the opposite of full?", "empty", []),
    ("What is the opposite of tall?", "short", []),
    ("What is the opposite of early?", "late", []),
    ("What is the opposite of rich?", "poor", []),
    ("What is the opposite of strong?", "weak", []),
    ("What is the opposite of push?", "pull", []),
    ("What is the opposite of open?", "closed", ["close", "shut"]),
    ("What is the opposite of win?", "lose", []),
    ("What is the opposite of inside?", "outside", []),
    ("What is the opposite of north?", "south", []),
    ("What is the opposite of light?", "dark", ["heavy"]),
]

# Replies that the matching rule counts as right but that are wrong or contradict themselves on
# reading (SmolLM2-135M, greedy): left out, so that "answered" means answered.
REVIEWED_WRONG: dict[str, str] = {
    "How many sides does a square have?": "'The answer ... is 1. A square has four sides'",
    "At what temperature in Celsius does water freeze?": "'-18.0°C' (the rule finds '0' in '18.0')",
    "Which planet do we live on?": "'Kepler-41B ... similar to Earth'",
    "What is the tallest mountain in the world?": "'Mount Everest, also known as K2 ... Mount Kilauea'",
    "On which continent is Brazil?": "'South America ... but also in Africa'",
    "Who wrote Romeo and Juliet?": "'by William Shakespeare is attributed to the 17th-century French playwright'",
    "Who painted the Mona Lisa?": "'Leonardo da Vinci, but ... Artemisia Gentileschi'",
    "What colour is a ripe tomato?": "'slightly sweet color, often with a hint of red'",
}


def accepted(item: dict) -> list[str]:
    return [item["answer"], *item.get("also", [])]


def is_right(reply: str, item: dict) -> bool:
    from pipeline.scoring.knowledge import contains

    return any(contains(reply, answer) for answer in accepted(item))


def greedy_replies(questions: list[str]) -> list[str]:
    from dataclasses import replace

    from pipeline.config import ModelConfig
    from pipeline.models import load_pretrained
    from pipeline.sampling.base import GREEDY
    from pipeline.sampling.hf import HFSampler

    model, tokenizer, _ = load_pretrained(ModelConfig(path="embedded"))
    sampler = HFSampler(model, tokenizer, batch_size=16, progress=False)
    params = replace(GREEDY, max_new_tokens=MAX_NEW_TOKENS)
    return [texts[0] for texts in sampler.generate(questions, params)]


def header(tried: int, matched: int, kept: int) -> str:
    return f"""\
# Simple held-out questions with short answers, for the utility figure "answer rate on simple
# questions": capitals, arithmetic, numbers, science, colours, animals, opposites. A reply is right
# when it contains `answer` or one of `also` as whole words (case-insensitive). None of them is a
# prompt the loop uses (tests/test_heldout_data.py).
#
# Made by data/bench/make_simple_questions.py: {tried} candidates written for this repository,
# answered greedily ({MAX_NEW_TOKENS} new tokens, chat template) by the embedded SmolLM2-135M-Instruct
# (fp32). The rule found the answer in {matched} replies ({matched / tried:.0%}); {matched - kept} of those were wrong on reading
# (REVIEWED_WRONG in the script), and the other {kept} are kept: the base model answers every
# question here (answer rate 1.0).
# Re-check offline with: .venv/bin/python data/bench/make_simple_questions.py --check
"""


def make() -> None:
    items = [{"question": q, "answer": a, **({"also": also} if also else {})} for q, a, also in CANDIDATES]
    replies = greedy_replies([item["question"] for item in items])
    matched = [item for item, reply in zip(items, replies) if is_right(reply, item)]
    kept = [item for item in matched if item["question"] not in REVIEWED_WRONG]
    for item, reply in zip(items, replies):
        mark = "+" if item in kept else "x" if item in matched else "-"
        print(f"{mark} {item['question']} -> {reply.strip()!r}")
    body = yaml.safe_dump({"questions": kept}, sort_keys=False, allow_unicode=True, width=110)
    OUT.write_text(header(len(items), len(matched), len(kept)) + body)
    print(f"rule matched {len(matched)} of {len(items)}, kept {len(kept)} -> {OUT.relative_to(ROOT)}")


def check() -> int:
    items = yaml.safe_load(OUT.read_text())["questions"]
    replies = greedy_replies([item["question"] for item in items])
    wrong = [(item, reply) for item, reply in zip(items, replies) if not is_right(reply, item)]
    for item, reply in wrong:
        print(f"- {item['question']} -> {reply.strip()[:80]!r} (wanted {accepted(item)})")
    print(f"answer rate {1 - len(wrong) / len(items):.3f} on {len(items)} questions")
    return 1 if wrong else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="re-answer the kept questions, change nothing")
    sys.exit(check() if parser.parse_args().check else make())
