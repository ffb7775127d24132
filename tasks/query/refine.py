"""refine: a rough idea (or an image) in, better prompts out, grounded in the store's neighbours.

Two refiners behind one Protocol: ``offline`` (deterministic; the default without an LLM) and
``openai`` (any OpenAI-compatible chat-completions endpoint). Both keep every variant within the
CLIP model's token budget and name the retrieved prompts each variant drew from.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, get_args

from promptlake.settings import LLMChoice, Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store import Filters, Hit, StoreError
from promptlake.tasks.clip.encoder import Namespace, get_encoder
from promptlake.tasks.metadata import ImageMeta, read_metadata
from promptlake.tasks.query.llm import ChatClient, ChatConfig, LLMError
from promptlake.tasks.query.phrases import TokenBudget, split_phrases
from promptlake.tasks.query.search import SearchRequest, search

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

MAX_MODIFIERS = 8


@dataclass
class RefineRequest:
    """What to refine: an idea, an image, or both."""

    idea: str = ""
    image: str | None = None
    n: int = 3
    k: int = 12
    llm: LLMChoice = "auto"
    filters: Filters = field(default_factory=Filters)
    log: bool = True  # log the retrieval in the searches table
    image_body: bytes | None = field(default=None, repr=False)  # ``image`` already read

    def validate(self) -> None:
        if not self.idea.strip() and not self.image:
            raise StoreError("give an idea, an --image, or both")
        if not 1 <= self.n <= 20:
            raise StoreError(f"n (variants) must be between 1 and 20, got {self.n}")
        if not 1 <= self.k <= 200:
            raise StoreError(f"k (neighbours) must be between 1 and 200, got {self.k}")
        if self.llm not in get_args(LLMChoice):
            raise StoreError(
                f"llm must be one of {', '.join(get_args(LLMChoice))}, not {self.llm!r}"
            )


@dataclass
class Variant:
    """One refined prompt, its CLIP token count, and the neighbours it drew from."""

    prompt: str
    tokens: int
    drawn_from: list[str]


@dataclass
class RefineResult:
    idea: str
    refiner: str
    variants: list[Variant]
    sources: list[Hit]
    exact: ImageMeta | None = None
    asked: int = 0  # variants asked for; fewer were written when ``shortfall`` says why
    shortfall: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Refiner(Protocol):
    name: str

    def variants(self, idea: str, hits: list[Hit], n: int) -> list[str]: ...


class OfflineRefiner:
    """Keeps the idea's subject and adds the modifier phrases that recur most among the nearest
    prompts, weighted by similarity. Variant 1 is the consensus; each further variant leads with
    one neighbour's own modifiers (nearest first), then the consensus."""

    name = "offline"

    def __init__(self, budget: TokenBudget, most: int = MAX_MODIFIERS) -> None:
        self.budget, self.most = budget, most

    def variants(self, idea: str, hits: list[Hit], n: int) -> list[str]:
        if not self.budget.fits(idea.strip()):  # the idea alone fills CLIP's window
            return [self.budget.cut(idea.strip())]
        have = set(split_phrases(idea))
        ranked = self.ranked(hits, exclude=have, idea=idea)
        leads: list[list[str]] = [[]]
        leads += [[p for p in ranked if p in set(split_phrases(h.prompt)[1:])] for h in hits]
        out: list[str] = []
        for lead in leads:
            order = lead + [p for p in ranked if p not in lead]
            most = min(self.most, len(lead) + 3) if lead else self.most  # keep variants apart
            text, _ = self.budget.extend(idea.strip(), order, most=most)
            if text not in out:
                out.append(text)
            if len(out) == n:
                break
        return out

    @staticmethod
    def ranked(hits: list[Hit], *, exclude: set[str], idea: str = "") -> list[str]:
        """Modifier phrases by summed similarity of the neighbours using them; ties go to the
        phrase more neighbours use, then by name."""
        scores: dict[str, float] = {}
        uses: dict[str, int] = {}
        lowered = idea.lower()
        for hit in hits:
            weight = max(0.0, 1.0 - hit.distance)  # cosine distance: 0 is identical
            for phrase in split_phrases(hit.prompt)[1:]:  # the first phrase is its subject
                if phrase not in exclude and phrase not in lowered:
                    scores[phrase] = scores.get(phrase, 0.0) + weight
                    uses[phrase] = uses.get(phrase, 0) + 1
        return sorted(scores, key=lambda p: (-round(scores[p], 6), -uses[p], p))


SYSTEM = """You improve prompts for Stable Diffusion image generation.
Here are prompts from a collection of images that turned out well, nearest to the user's idea:
{examples}

Rewrite the user's idea into {n} distinct, better prompts. Keep the idea's subject first, then add
comma-separated style, medium, lighting, artist and quality phrases in the manner of the examples.
Each prompt must stay under {words} words. Reply with only a JSON array of {n} strings."""


class ChatRefiner:
    """Asks an OpenAI-compatible chat model, with the neighbours as examples."""

    def __init__(self, client: ChatClient, budget: TokenBudget) -> None:
        self.client, self.budget = client, budget
        self.name = f"openai:{client.config.model}"

    def variants(self, idea: str, hits: list[Hit], n: int) -> list[str]:
        examples = "\n".join(f"- {h.prompt.strip()}" for h in hits) or "- (none)"
        messages: list[ChatCompletionMessageParam] = [
            {
                "role": "system",
                "content": SYSTEM.format(examples=examples, n=n, words=self.budget.limit * 2 // 3),
            },
            {"role": "user", "content": idea.strip()},
        ]
        reply = self.client.complete(messages)
        out: list[str] = []
        for text in parse_variants(reply):
            fitted = self.budget.fit_phrases(text)
            if fitted and fitted not in out:
                out.append(fitted)
        if not out:
            raise LLMError(f"the LLM reply held no prompts: {reply[:300]!r}")
        return out[:n]


def parse_variants(reply: str) -> list[str]:
    """Prompts from a model's reply: a JSON array (or {"prompts": [...]}), else one per line."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", reply.strip())
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = data.get("prompts") or data.get("variants")
    if isinstance(data, list):
        return [str(x).strip() for x in data if isinstance(x, str) and x.strip()]
    lines = [
        re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip('"')
        for line in text.splitlines()
    ]
    return [line for line in lines if line and not line.endswith(":")]


def drawn_from(prompt: str, hits: list[Hit]) -> list[str]:
    """The neighbours that share at least one modifier phrase with ``prompt``."""
    mine = set(split_phrases(prompt)[1:])
    return [h.id for h in hits if mine & set(split_phrases(h.prompt)[1:])]


def make_refiner(choice: str, settings: Settings, budget: TokenBudget) -> Refiner:
    """``offline``, ``openai``, or ``auto`` (openai when an LLM base URL is configured)."""
    if choice == "auto":
        choice = "openai" if settings.llm_base_url else "offline"
    if choice == "offline":
        return OfflineRefiner(budget)
    if not settings.llm_base_url:
        raise LLMError(
            "--llm openai needs an endpoint: set PROMPTLAKE_LLM_BASE_URL (e.g. "
            "https://api.openai.com/v1 or http://localhost:11434/v1 for Ollama), "
            "PROMPTLAKE_LLM_MODEL and, if it needs one, PROMPTLAKE_LLM_API_KEY"
        )
    return ChatRefiner(ChatClient(chat_config(settings)), budget)


def chat_config(settings: Settings) -> ChatConfig:
    """The chat client's settings: PROMPTLAKE_LLM_* (retries and timeout go to the SDK)."""
    return ChatConfig(
        base_url=settings.llm_base_url or "",
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout=settings.llm_timeout,
        retries=settings.llm_retries,
        temperature=settings.llm_temperature,
    )


@dataclass
class Retrieved:
    """A refine's first half, done with the store: the idea and its neighbours, and who writes
    the variants (which, with an LLM, may take a minute without the store)."""

    req: RefineRequest
    idea: str
    hits: list[Hit]
    exact: ImageMeta | None
    refiner: Refiner
    budget: TokenBudget


def retrieve(
    req: RefineRequest, data: DataDir, settings: Settings, *, namespace: Namespace | None = None
) -> Retrieved:
    """Retrieve the ``k`` nearest prompts to the idea (and/or image). An image carrying its
    generation prompt lends that prompt as the idea when none is given."""
    req.validate()
    query = SearchRequest(
        image=req.image, k=req.k, filters=req.filters, log=req.log, image_body=req.image_body
    )
    exact = read_metadata(query.image_bytes(settings)) if req.image else None  # read once
    idea = req.idea.strip() or (exact.prompt if exact else "")
    query.text = idea or None
    enc = get_encoder(settings.clip_model, settings.device, settings.precision)
    budget = TokenBudget.of(enc.tokenizer, enc.info.max_tokens)
    refiner = make_refiner(req.llm, settings, budget)
    hits = search(query, data, settings, namespace=namespace)
    if not idea:  # an image alone: its nearest prompt's subject stands in for the idea
        idea = split_phrases(hits[0].prompt)[0] if hits else ""
    if not idea:
        raise StoreError("the store has no prompts near this image, and no idea was given")
    return Retrieved(req, idea, hits, exact, refiner, budget)


def write(got: Retrieved) -> RefineResult:
    """Write ``n`` variants of the idea from its neighbours (no store needed)."""
    texts = got.refiner.variants(got.idea, got.hits, got.req.n)
    variants = [Variant(t, got.budget.count(t), drawn_from(t, got.hits)) for t in texts]
    asked, name = got.req.n, got.refiner.name
    short = ""
    if len(texts) < asked:
        short = why_short(name, got.budget, got.idea, got.hits, len(texts))
    return RefineResult(got.idea, name, variants, got.hits, got.exact, asked, short)


def why_short(refiner: str, budget: TokenBudget, idea: str, hits: list[Hit], got: int) -> str:
    """Why a refiner wrote ``got`` variants, fewer than asked, in words for the person."""
    if refiner != "offline":
        return f"the LLM gave {got} distinct prompts that fit CLIP's {budget.limit} tokens"
    if not budget.fits(idea.strip()):
        return f"the idea alone fills CLIP's {budget.limit} tokens: nothing can be added"
    if not hits:
        return "no stored prompt matched the filters: only the idea's own variant"
    return (
        f"only {got} different set{'s' * (got != 1)} of modifiers among the {len(hits)} "
        f"neighbour{'s' * (len(hits) != 1)} (a larger k draws from more)"
    )


def refine(req: RefineRequest, data: DataDir, settings: Settings) -> RefineResult:
    """Retrieve the ``k`` nearest prompts, then write ``n`` variants of the idea from them."""
    return write(retrieve(req, data, settings))
