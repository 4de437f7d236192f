"""/v1/tokenize: what the model's tokenizer makes of texts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Served model id or alias (GET /v1/models).")
    input: str | list[str] = Field(description="A text or a list of texts.")


class TokenizedText(BaseModel):
    object: Literal["tokens"] = "tokens"
    index: int
    tokens: list[int] = Field(description="Token ids with BOS and EOS, before any truncation.")
    count: int = Field(description="len(tokens).")
    truncated: bool = Field(description="Whether embedding would truncate the text to the context length.")
    token_strings: list[str] = Field(
        description="Each token as the vocabulary spells it, one per entry of `tokens`: byte-level BPE symbols "
        "(a non-ASCII byte shows as a stand-in letter, e.g. `é` as `Ã©`), `</w>` ending a word, "
        "`<|startoftext|>`/`<|endoftext|>` for BOS/EOS."
    )
    offsets: list[tuple[int, int]] = Field(
        description="Each token's [start, end) span in the text as sent, in characters (Unicode code points, "
        "not bytes), one per entry of `tokens`. BOS is [0, 0]; EOS is empty at the end of the last token "
        "before it. Spans never go backwards and whitespace falls between them; tokens holding bytes of one "
        "character each cover all of it (equal or overlapping spans), and a combining accent NFC composes is "
        "inside its letter's span. Before any truncation, like `tokens`."
    )


class TokenizeResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[TokenizedText]
    model: str
    context_length: int
