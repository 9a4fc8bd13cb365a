"""The deterministic quality gates: each removes its junk, good samples and every shipped seed pass, nothing raises.

Standard library and yaml only: no mlx, no model.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxlab.sdg.gates import GATES, GateSettings, LeafProfile, _rouge, check_sample, leaf_profile, rouge_l

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "documents" / "jolie").glob("*.md"))]


def _load_leaves() -> dict[str, dict]:
    """Every leaf of the shipped taxonomy: its seed (question, answer, context) triples, task and documents."""
    leaves = {}
    for path in sorted((ROOT / "taxonomy").rglob("qna.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = str(path.parent.relative_to(ROOT / "taxonomy"))
        if path.relative_to(ROOT / "taxonomy").parts[0] == "knowledge":
            seeds = [(qa["question"], qa["answer"], example["context"])
                     for example in data["seed_examples"] for qa in example["questions_and_answers"]]
            leaves[name] = {"seeds": seeds, "task": data.get("document_outline", ""), "documents": DOCUMENTS}
        else:
            seeds = [(e["question"], e["answer"], e.get("context", "")) for e in data["seed_examples"]]
            leaves[name] = {"seeds": seeds, "task": data.get("task_description", ""), "documents": []}
    return leaves


LEAVES = _load_leaves()
CALCULATOR = "compositional_skills/programming/jolie/calculator"
REST = "compositional_skills/programming/jolie/rest_api"
KNOWLEDGE = "knowledge/programming_languages/jolie"


def profile_of(name: str, skip: int | None = None) -> LeafProfile:
    leaf = LEAVES[name]
    pairs = [(q, a) for i, (q, a, _) in enumerate(leaf["seeds"]) if i != skip]
    return leaf_profile(pairs, task=leaf["task"], documents=leaf["documents"])


HAIKU = leaf_profile([
    ("Write a haiku about autumn leaves.", "Crimson leaves drifting\nslowly over the cold pond\nthe wind hums softly"),
    ("Compose a haiku about the first snow of winter.", "First snow on the pines\nfootprints vanish by morning\n"
                                                        "silence fills the hills"),
    ("Can you write a haiku about a summer thunderstorm?", "Heavy summer air\nthunder rolls across the fields\n"
                                                           "warm rain on the dust"),
    ("Give me a haiku about cherry blossoms in spring.", "Pink petals falling\non the river's quiet flow\n"
                                                         "spring breathes in the trees"),
    ("Write a haiku about the moon over the sea.", "Pale moon on the waves\nsilver light upon the tide\n"
                                                   "the night holds its breath"),
], task="Write haiku about nature and the seasons.")

GOOD_QUESTION = "Add a square root operation to my Jolie calculator that rejects negative numbers."
GOOD_ANSWER = """\
Declare the operation and its fault in the interface, then implement it with the `Math` service of the
standard library:

```jolie
interface CalculatorInterface {
    RequestResponse:
        sqrt( double )( double ) throws NegativeNumber( string )
}

service Calculator {
    execution: concurrent
    embed Math as math
    inputPort CalcInput {
        location: "socket://localhost:8000"
        protocol: sodep
        interfaces: CalculatorInterface
    }
    main {
        [ sqrt( x )( res ) {
            if( x < 0.0 ) { throw( NegativeNumber, "negative number: " + x ) }
            sqrt@math( x )( res )
        } ]
    }
}
```

A client that sends a negative number receives the `NegativeNumber` fault, which it can catch with `install`.
See [the Jolie documentation](https://docs.jolie-lang.org) for the `Math` service; `a[0]` is the first element.
"""
JOLIE_CODE = """\
```jolie
service Greeter {
    execution: concurrent
    inputPort GreeterInput {
        location: "socket://localhost:9000"
        protocol: sodep
        interfaces: GreeterInterface
    }
    main {
        greet( request )( response ) { response = "Hello, " + request.name }
    }
}
```"""
BANANA_BREAD = ("Preheat the oven to 180 degrees. Mash three ripe bananas, then stir in melted butter, brown sugar, "
                "one beaten egg, vanilla, baking soda, a pinch of salt and flour until just combined. Pour the batter "
                "into a buttered loaf pan, scatter walnuts over the top and bake for about an hour, until a toothpick "
                "comes out clean. Let the loaf cool in the pan for ten minutes before slicing it and serving it warm "
                "with butter or honey.")


def gate(question: str, answer: str, profile: LeafProfile | None = None, **kwargs) -> str | None:
    result = check_sample(question, answer, profile or profile_of(CALCULATOR), **kwargs)
    return result and result[0]


# ---------------------------------------------------------------------------------------------- good samples

def test_good_samples_pass_every_gate():
    assert check_sample(GOOD_QUESTION, GOOD_ANSWER, profile_of(CALCULATOR)) is None
    assert check_sample("Write a haiku about a frog jumping into an old pond.",
                        "An old silent pond\na frog jumps into the pond\nsplash! silence again", HAIKU) is None


def test_a_grounded_sample_is_on_task_through_its_context():
    context = """\
```jolie
type City { name: string }
type Forecast { city: string  celsius: double  humidity: int  wind: double }

interface WeatherInterface {
    RequestResponse: forecast( City )( Forecast )
}
```"""
    question = "Which fields does a forecast hold, and in which units?"
    answer = ("A `Forecast` holds the `city` it describes, the temperature in `celsius` as a `double`, the `humidity` "
              "as an integer percentage and the `wind` speed as a `double` in kilometres per hour. The `forecast` "
              "operation receives a `City` request, whose `name` child says which city is meant, and answers with "
              "a `Forecast` tree; the interface checks both messages against these types when they cross a port.")
    assert check_sample(question, answer, profile_of(REST), context=context) is None
    # the same weather talk without its context is not about REST APIs in Jolie
    assert gate(question.replace("a forecast", "the weather forecast"), "The weather forecast holds the city, the "
                "temperature in celsius, the humidity as a percentage and the wind speed in kilometres per hour, "
                "measured every morning at dawn by the meteorological station near the harbour, together with the "
                "chance of rain, snow or fog over the mountains and the coast during the coming weekend.",
                profile_of(REST)) == "off_task"


# ---------------------------------------------------------------------------------------------- each gate's junk

def test_the_real_junk_is_leakage():
    assert check_sample("I'm ready to help! What's your next question?",
                        "[SUBCKILL Question] How do I write a calculator service in Jolie?",
                        profile_of(CALCULATOR))[0] == "leakage"
    assert gate("What should I pack?\nYour answer:\n[Question]\n\nYour answer: How to pack a ski trip of one week?",
                "Question: How to pack a ski trip of one week?\n" * 4) == "leakage"
    # each half alone is caught too
    assert gate("How do I sum two numbers in my Jolie calculator?",
                "[SUBCKILL Question] Use the sum operation of the calculator.") == "leakage"
    assert gate("How do I sum two numbers in my Jolie calculator?",
                "Question: How to pack a ski trip of one week?\n" * 4) == "leakage"


@pytest.mark.parametrize("question, answer", [
    ("How do I sum two numbers in Jolie?<|im_end|>", GOOD_ANSWER),
    (GOOD_QUESTION, GOOD_ANSWER + "<|endoftext|>"),
    (GOOD_QUESTION, "<s> " + GOOD_ANSWER + " </s>"),
    (GOOD_QUESTION, GOOD_ANSWER + "\n<end_of_turn>"),
    ("[Start of Question] How do I sum two numbers in Jolie? [End of Question]", GOOD_ANSWER),
    (GOOD_QUESTION, GOOD_ANSWER + "\n[End of Answer]"),
    ("[INST] How do I sum two numbers in Jolie?", GOOD_ANSWER),
    ("Task: add a square root operation to my Jolie calculator.", GOOD_ANSWER),
    ("Q: How do I sum two numbers in Jolie?", GOOD_ANSWER),
    (GOOD_QUESTION, "Answer: " + GOOD_ANSWER),
    (GOOD_QUESTION, "**Response:** " + GOOD_ANSWER),
    (GOOD_QUESTION, GOOD_ANSWER + "\nUser: thanks!\nAssistant: you are welcome"),
    ("Here is a new question: how do I sum two numbers in Jolie?", GOOD_ANSWER),
    ("Here's a question for you. How do I sum two numbers in Jolie?", GOOD_ANSWER),
    ("As an AI language model, I wonder how to sum two numbers in Jolie?", GOOD_ANSWER),
    ("How do I sum two numbers in Jolie? I hope this helps.", GOOD_ANSWER),
])
def test_leakage(question, answer):
    assert gate(question, answer) == "leakage"


def test_leakage_spares_links_code_and_indexing():
    answer = GOOD_ANSWER + """
The array `values[First]` and the code `[Question]` are inline code, and so is this block:

```
[Start of Question]
Answer: 42
```

Read [Jolie Docs](https://docs.jolie-lang.org) and [Jolie][1]; `r.x[0]`, items[Index] and
[ sum( r )( res ) { res = r.x + r.y } ] are code, as is
  user: string
in a type.
"""
    assert check_sample(GOOD_QUESTION, answer, profile_of(CALCULATOR)) is None


@pytest.mark.parametrize("question, answer", [
    (GOOD_QUESTION, GOOD_ANSWER + "\nThe calculator service listens on port 8000.\n" * 4),
    (GOOD_QUESTION, GOOD_ANSWER + " The calculator service listens on port 8000." * 3),
    (GOOD_QUESTION, GOOD_ANSWER + "\n```jolie\n" + "println@console( \"the result is \" + res )()\n" * 6 + "```\n"),
    (GOOD_QUESTION, " ".join(["sum the numbers x y in the calculator service"] * 8)),
    ("How do I add a sum operation to my Jolie calculator? How do I add a sum operation to my Jolie calculator?",
     GOOD_ANSWER),
])
def test_repetition(question, answer):
    assert gate(question, answer) == "repetition"


@pytest.mark.parametrize("question, answer, finish_reason", [
    (GOOD_QUESTION, GOOD_ANSWER, "length"),
    (GOOD_QUESTION, GOOD_ANSWER + "\n```jolie\nservice Extra {\n    main { nullProcess }\n}\n", "stop"),
    (GOOD_QUESTION, GOOD_ANSWER.rstrip() + " It also checks the", "stop"),
    (GOOD_QUESTION, GOOD_ANSWER.rstrip() + " Then run the client and", "stop"),
    (GOOD_QUESTION, GOOD_ANSWER.rstrip() + " Here is the client:", "stop"),
    (GOOD_QUESTION, GOOD_ANSWER.rstrip() + " sqrt@math(", "stop"),
    ("Add a square root operation to my Jolie calculator that rejects negative numbers,", GOOD_ANSWER, "stop"),
])
def test_truncated(question, answer, finish_reason):
    assert gate(question, answer, finish_reason=finish_reason) == "truncated"


@pytest.mark.parametrize("question", [
    "The calculator service in Jolie listens on port 8000.",
    "My Jolie calculator has a sum operation and a divide operation.",
    "Jolie calculator",
    "",
])
def test_not_a_question(question):
    assert gate(question, GOOD_ANSWER) == "not_a_question"


@pytest.mark.parametrize("question", [
    "Please write a Jolie calculator with a square root operation.",
    "Could you show me a square root operation for my Jolie calculator.",
    "I need a square root operation in my Jolie calculator that rejects negative numbers.",
    "Help me add a square root operation to my Jolie calculator.",
    "My calculator lacks a square root. Implement one in Jolie that rejects negative numbers.",
    "In my Jolie calculator, add a square root operation that rejects negative numbers.",
    "Is it possible to add a square root operation to a Jolie calculator",
])
def test_questions_and_instructions_are_questions(question):
    assert check_sample(question, GOOD_ANSWER, profile_of(CALCULATOR)) is None


def test_echo():
    question = "How do I add a square root operation to my Jolie calculator that rejects negative numbers?"
    assert gate(question, question + "\n\n" + GOOD_ANSWER) == "echo"
    assert gate(question, "You add a square root operation to your Jolie calculator that rejects negative numbers "
                          "in the calculator.", HAIKU) == "echo"


def test_length():
    assert check_sample(GOOD_QUESTION, "Use sqrt@math and throw a fault.", profile_of(CALCULATOR)) == \
        ("length", "answer has 7 words; seeds have 120-157")
    long_answer = "\n\n".join(DOCUMENTS[:2])     # non-repeating Jolie prose, far longer than any seed answer
    assert gate("How do services, interfaces and ports fit together in Jolie?", long_answer) == "length"
    assert gate("Write a haiku about the wind and the long summer evenings on a quiet hill by the sea, when the "
                "light fades slowly over the grass and the birds go home and the first stars come out one by one, "
                "and the sound of the waves rises from the shore below while the village lights appear?",
                "Wind over the hill\nthe long light fades on the grass\nstars over the sea", HAIKU) == "length"


def test_seed_copy():
    question, answer, _ = LEAVES[CALCULATOR]["seeds"][3]
    assert gate(question, answer) == "seed_copy"
    assert gate(question.replace("Add an", "Please add an"), answer.replace("numbers", "values")) == "seed_copy"
    assert gate("Show an operation of my Jolie calculator that sums all the numbers of a list.", answer) == "seed_copy"
    assert check_sample(*LEAVES[CALCULATOR]["seeds"][3][:2], profile_of(CALCULATOR, skip=3)) is None


def test_off_task():
    assert gate("How do I bake banana bread at home?", BANANA_BREAD) == "off_task"
    assert gate("Write a haiku about a Jolie greeting service.", JOLIE_CODE, HAIKU) == "off_task"
    # and the other way round, each is on task in its own leaf
    assert check_sample("Write a Jolie service that greets its clients by name.", JOLIE_CODE + "\nIt answers every "
                        "`greet` request with a greeting that uses the name found in the request, and serves many "
                        "clients at once because its execution is concurrent.",
                        profile_of("compositional_skills/programming/jolie/service_and_client")) is None


# ---------------------------------------------------------------------------------------------- calibration

@pytest.mark.parametrize("name", sorted(LEAVES))
def test_every_shipped_seed_passes_every_gate(name):
    seeds = LEAVES[name]["seeds"]
    full = profile_of(name)
    for i, (question, answer, context) in enumerate(seeds):
        result = check_sample(question, answer, full, context=context)
        assert result is None or result[0] == "seed_copy", (name, i, result)
        # against the other seeds of its leaf a seed is a new sample like any generated one: all gates apply
        assert check_sample(question, answer, profile_of(name, skip=i), context=context) is None, (name, i)


# Measured on the shipped seeds, each against the other seeds of its leaf: on-task share >= 0.56, ROUGE-L to the
# nearest other seed <= 0.48, answer-to-question ROUGE-L <= 0.26, repeated 4-grams <= 0.17, a code line at most
# twice, no prose line twice, word counts within 1.68x of the other seeds' range. The defaults leave room beyond each.
STRICT = GateSettings(length_factor=2.0, seed_copy_threshold=0.6, echo_threshold=0.35, on_task_threshold=0.5,
                      max_line_repeats=1, max_code_line_repeats=2, max_repeated_ngrams=0.25)


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_shipped_seeds_pass_with_margin(name):
    for i, (question, answer, context) in enumerate(LEAVES[name]["seeds"]):
        result = check_sample(question, answer, profile_of(name, skip=i), context=context, settings=STRICT)
        assert result is None, (name, i, result)


def test_gate_names_are_the_documented_ones():
    assert GATES == ("leakage", "repetition", "truncated", "not_a_question", "echo", "length", "seed_copy",
                     "off_task")


# ---------------------------------------------------------------------------------------------- robustness, speed

ODD = ["", " ", "\x00", "\x00\x01\x02\x1b[31m", "?", "???", "```", "``````", "[", "]", "[[]]", "<|", "<s>", "\u202e",
       "\ud7ff\ufffd", "a" * 100_000, "word " * 50_000, "x?\n" * 20_000, "```\n" * 3_001, "é" * 1000, "\n" * 10_000,
       "[Q" * 10_000, "Question:" * 5_000, "<|im_start|" * 5_000]


@pytest.mark.parametrize("text", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
def test_odd_input_never_raises(text):
    for profile in (profile_of(CALCULATOR), leaf_profile([]), leaf_profile([("", "")], task=text, documents=[text]),
                    leaf_profile([(text, text)])):
        for question, answer in ((text, GOOD_ANSWER), (GOOD_QUESTION, text), (text, text)):
            result = check_sample(question, answer, profile, context=text, finish_reason=text)
            assert result is None or (result[0] in GATES and isinstance(result[1], str))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.text(max_size=400), st.text(max_size=50))
def test_any_text_never_raises(question, answer, context):
    result = check_sample(question, answer, HAIKU, context=context)
    assert result is None or (result[0] in GATES and result[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), max_size=60), st.lists(st.sampled_from("abcdef"), max_size=60))
def test_bit_parallel_rouge_equals_the_lcs_table(x, y):
    prev = [0] * (len(y) + 1)
    for xi in x:                                     # the textbook dynamic-programming LCS
        cur = [0]
        for j, yj in enumerate(y):
            cur.append(prev[j] + 1 if xi == yj else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    expected = 2 * lcs / (len(x) + len(y)) if lcs else 0.0    # F1 of precision lcs/|x| and recall lcs/|y|
    assert rouge_l(x, y) == pytest.approx(expected) and _rouge(x, y) == pytest.approx(expected)


def test_hundreds_of_samples_are_fast():
    leaf = [seed for name in (CALCULATOR, REST, KNOWLEDGE) for seed in LEAVES[name]["seeds"]]
    profile = leaf_profile([(q, a) for q, a, _ in leaf[:20]], task="Jolie", documents=DOCUMENTS)
    # seeds against their own leaf are the slow case: near-copies, so every ROUGE-L is computed in full
    samples = ([(q, a) for q, a, _ in leaf] + [(GOOD_QUESTION, GOOD_ANSWER)]) * 10
    start = time.perf_counter()
    for question, answer in samples[:300]:
        check_sample(question, answer, profile)
    assert time.perf_counter() - start < 3.0     # ~0.2 s here; generous for slow CI machines


# ---------------------------------------------------------------------------------------------- per kind (issue 20)

# a creative freeform skill with short answers: every new animal is new words
PET_NAMES = leaf_profile([
    ("Suggest a name for my fluffy white cat who sleeps all day.", "Snowball, Cloud, Dozy"),
    ("What should I call my brown puppy that loves to dig?", "Digger, Cocoa, Bandit"),
    ("I have a tiny green turtle that hides in its shell. Name ideas?", "Shelly, Pebble, Sprout"),
    ("Give me a name for a loud parrot that talks all day.", "Chatter, Echo, Polly"),
    ("Name ideas for a fast black horse with a white star on its forehead?", "Comet, Midnight, Blaze"),
], task="Suggest pet names for an animal that the user describes.")


def test_a_creative_skill_keeps_samples_with_new_words():
    # the example: the teacher's on-task pairs were all removed as off_task (8% of their words in the seeds)
    assert check_sample("What do you call a coastal bird that is super shiny and has a long tail?",
                        "Xhaki, Shiro, Glimmer", PET_NAMES) is None
    assert check_sample("Suggest a name for my grumpy old hamster that hoards sunflower seeds.",
                        "Nibbles, Grumbles, Hoarder", PET_NAMES) is None
    # new words in another form are still off task: code in a leaf whose answers are a few names
    assert gate("Suggest a name for my hamster.", JOLIE_CODE, PET_NAMES) == "off_task"


def test_a_skill_answered_in_another_script_is_off_task():
    korean = leaf_profile([("Count from 1 to 5 in Korean.", "하나\n둘\n셋\n넷\n다섯"),
                           ("Count from 6 to 10 in Korean.", "여섯\n일곱\n여덟\n아홉\n열")],
                          task="Count in Korean")
    assert check_sample("How do you say eleven, twelve and thirteen in Korean?", "열하나\n열둘\n열셋",
                        korean) is None
    assert gate("Count the days of the week in Korean.", "Monday, Tuesday, Wednesday and Thursday come first, "
                "then Friday, Saturday and Sunday close the week for every calendar.", korean) == "off_task"


# a public InstructLab knowledge leaf: seed answers of a few words, back-translated answers of whole passages
SHORT_SEEDS = [("Where does the black-capped chickadee live?", "In North American forests."),
               ("What does the chickadee eat in winter?", "Seeds, berries and insect eggs."),
               ("How long does a chickadee live?", "About two to three years.")]
PASSAGE = ("The black-capped chickadee is a small, nonmigratory songbird that lives in deciduous and mixed forests "
           "of North America. It has a black cap and bib, white cheeks, a gray back and wings, and whitish "
           "underparts with rusty flanks. In winter it caches seeds and insects in bark crevices and finds them "
           "again many weeks later by memory.")


def test_a_back_translated_passage_is_not_cut_by_the_seed_answers_length():
    assert len(PASSAGE.split()) == 57
    question = "What does the black-capped chickadee look like, and where does it live?"
    documents = [PASSAGE, "Chickadees form flocks in winter and nest in tree cavities in spring."]
    by_seeds = leaf_profile(SHORT_SEEDS, task="The black-capped chickadee", documents=documents)
    by_passages = leaf_profile(SHORT_SEEDS, task="The black-capped chickadee", documents=documents,
                               answers=[PASSAGE, documents[1] + " " + PASSAGE])
    assert gate(question, PASSAGE, by_seeds) == "length"       # a teacher's own 57-word answer: 3x the seeds at most
    assert check_sample(question, PASSAGE, by_passages) is None
    # the passages' range still bounds the question, and the question alone decides off_task (the answer is the text)
    assert gate("Which recipe makes the best chocolate cake for a birthday party with friends?", PASSAGE,
                by_passages) == "off_task"


def test_a_templated_question_with_a_new_subject_is_no_seed_copy():
    # public skill leaves ask in one template ("Tell me a pun about X"): a new X is a new sample, the same X a copy
    puns = leaf_profile([("Tell me a pun about coffee.", "Why did the coffee file a police report? It got mugged."),
                         ("Tell me a pun about bread.", "Why did the loaf stay home? It was feeling crumby."),
                         ("Tell me a pun about trees.", "Why do trees hate tests? They get stumped.")],
                        task="Tell puns")
    assert check_sample("Tell me a pun about sunscreen.", "Why did the sunscreen quit? It was burned out.",
                        puns) is None
    assert gate("Tell me a pun about coffee!", "What do you call sad coffee? Depresso.", puns) == "seed_copy"


def test_a_new_answer_to_the_question_every_seed_asks_is_no_seed_copy():
    jokes = leaf_profile([("Tell me a knock knock joke", "Knock knock. Who's there? Lettuce. Lettuce who? Lettuce in!"),
                          ("Tell me a knock knock joke", "Knock knock. Who's there? Boo. Boo who? Don't cry!"),
                          ("Tell me a knock knock joke", "Knock knock. Who's there? Figs. Figs who? Figs the bell!")],
                         task="telling knock knock jokes")
    assert check_sample("Tell me a knock knock joke", "Knock knock. Who's there? Interrupting cow. Interrupting "
                        "cow wh- MOO!", jokes) is None
    # the same joke again is still a copy
    assert gate("Tell me a knock knock joke", "Knock knock. Who's there? Boo. Boo who? Don't cry!",
                jokes) == "seed_copy"


def test_a_back_translated_question_must_be_one_its_passage_answers_when_grounding_is_on():
    documents = [PASSAGE, "Chickadees form flocks in winter and nest in tree cavities in spring."]
    profile = leaf_profile(SHORT_SEEDS, documents=documents, answers=documents)
    grounded = GateSettings(grounding_threshold=0.6)
    # measured on public leaves: most unusable back-translated questions ask what their passage never mentions
    question = "How many eggs does the chickadee lay, and when do the young fledge?"
    assert check_sample(question, PASSAGE, profile) is None                     # off by default (see GateSettings)
    assert check_sample(question, PASSAGE, profile, settings=grounded)[0] == "off_task"
    assert check_sample("Where does the chickadee hide seeds and insects in winter?", PASSAGE, profile,
                        settings=grounded) is None
    # the leaf's subject counts as asked about, and the passage's own ending is not a truncated generation
    assert check_sample("Where do chickadees cache their seeds?", "In winter they cache seeds:", profile,
                        settings=grounded) is None
