"""How a flow parameter looks in the Prefect UI's run form, and how a blank one stays unset.

The forms of both Prefect UIs pre-fill a field's schema ``default`` and send it, and a schema
built in the process that registers a deployment must carry nothing of that process. So:
- an optional parameter's Python default is :data:`BLANK` (pydantic's ``NoDefault``): its schema
  has no ``default``, the form shows an empty field and sends nothing for it, and the run
  resolves it in the process that runs it (``Settings``, from *its* environment);
- :class:`Param` on its annotation gives the field its description (naming the setting that
  fills it when blank, never a value) and a plain input: no "int | None" switch;
- :data:`Hidden` keeps a parameter out of the form (the flow still takes it in process).

No Prefect here: the CLI's search and refine import the parameter models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue, NoDefault, SkipJsonSchema
from pydantic_core import CoreSchema, core_schema

from promptlake.settings import Settings, get_settings, local_model_path
from promptlake.storage.store.urls import parse_store_url

# The default of every optional flow parameter: "not given". Models map it to None.
BLANK: Any = NoDefault

T = TypeVar("T")
Hidden = Annotated[T, SkipJsonSchema()]


def _unset(value: Any) -> Any:
    return None if value is NoDefault else value


@dataclass(frozen=True)
class Param:
    """A flow parameter's form: its description, and the setting it overrides when given
    (``setting``; blank, the running process's ``PROMPTLAKE_<SETTING>`` fills it). ``blank``
    replaces the generic "Blank: …" sentence."""

    text: str
    setting: str | None = None
    blank: str | None = None

    def __post_init__(self) -> None:
        if self.setting and self.setting not in Settings.model_fields:
            raise ValueError(f"no setting named {self.setting!r}")

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_before_validator_function(_unset, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        kept = [b for b in out.get("anyOf", []) if b.get("type") != "null"]
        if len(kept) == 1:  # T | None: a plain input, left empty when not given
            out = {k: v for k, v in out.items() if k != "anyOf"} | kept[0]
        return {**out, "description": self.describe()}

    def describe(self) -> str:
        """The form's text: what the field is, and what fills it when left blank."""
        if self.blank:
            return f"{self.text} Blank: {self.blank}."
        if self.setting:
            env = f"PROMPTLAKE_{self.setting.upper()}"
            return f"{self.text} Blank: {env} of the process that runs it."
        return self.text


class FlowParams(BaseModel):
    """Parameters of one flow, as one typed record: ``settings()`` is what the run uses. Each
    flow declares the same fields as keyword arguments (``MAIN`` first): see
    tests/operations/test_params.py."""

    MAIN: ClassVar[str]
    model_config = ConfigDict(extra="forbid")  # a misspelt parameter is an error, not ignored

    @field_validator("store_url", check_fields=False)
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        """Parameters show in the Prefect UI and in state files: a password must not travel
        in them."""
        if url and parse_store_url(url).password:
            raise ValueError(
                "a store URL given as a parameter must not carry a password (parameters show in "
                "the Prefect UI): set PROMPTLAKE_STORE_URL with the password in the environment "
                "of the process that runs the flow"
            )
        return url

    @field_validator("clip_model", check_fields=False)
    @classmethod
    def _model_path(cls, name: str | None) -> str | None:
        """A local model folder travels as its absolute path (into ``state/ingest.json`` too),
        resolved by the process that validates the parameters: the one that runs the flow."""
        return local_model_path(name) if name else name

    @classmethod
    def of_call(cls, args: dict[str, Any]) -> Any:
        """The record of a flow's call (its ``locals()``): blank arguments become None."""
        return cls.model_validate({k: v for k, v in args.items() if k in cls.model_fields})

    def flow_kwargs(self) -> dict[str, Any]:
        """Every field as a keyword argument of the flow, None included (a flow run's record
        then shows "not given" as null, not as a placeholder object)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def given_settings(self) -> dict[str, Any]:
        """The settings this run was given (a field that mirrors a setting and is not None)."""
        given = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            for meta in field.metadata:
                if isinstance(meta, Param) and meta.setting and value is not None:
                    given[meta.setting] = value
        return given

    def settings(self, **overrides: Any) -> Settings:
        """Settings from this process's environment, with every parameter given on top."""
        return get_settings(**self.given_settings(), **overrides)
