"""The README documents every setting the service reads."""

from pathlib import Path

from pydantic import BaseModel

from app.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def env_names(model: type[BaseModel], prefix: str = "TLSRPT_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        key = (field.alias or name).upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += env_names(annotation, f"{prefix}{key}__")
        else:
            names.append(prefix + key)
    return names


def test_every_setting_is_in_the_readme() -> None:
    missing = [n for n in env_names(Settings) if f"`{n}`" not in README]
    assert not missing, f"README lacks: {missing}"
