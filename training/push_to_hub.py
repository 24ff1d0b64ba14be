"""Publish a model folder as a Hugging Face Hub model repo.

    python training/push_to_hub.py weights/NAME --repo-id ORG/NAME [--private] [--revision-note "..."]

Uploads only the published files (config.json, model.safetensors, evaluation.json, history.json,
split.json, README.md model card, plots); never resume_state.pt. Verifies the weights' sha256 first.
Needs a token (HF_TOKEN or `hf auth login`) and a network connection.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from huggingface_hub import CommitOperationAdd, HfApi  # noqa: E402

from tumortrace.checkpoint import MODEL_FILES, ModelLoadError, load_model  # noqa: E402

log = logging.getLogger("push_to_hub")


def publish_operations(folder: Path) -> list[CommitOperationAdd]:
    """The files a model repo gets, verified loadable first (sha256, strict weights)."""
    load_model(folder)
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
            for name in MODEL_FILES if (folder / name).is_file()]


def push(folder: Path, repo_id: str, private: bool, message: str, api: HfApi | None = None) -> str:
    api = api or HfApi()
    operations = publish_operations(folder)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.create_commit(repo_id, operations, commit_message=message, repo_type="model")
    return getattr(info, "oid", None) or str(info)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="model folder written by training/train.py")
    p.add_argument("--repo-id", required=True, help="Hub repo id, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private (default: public)")
    p.add_argument("--message", default="Upload TumorTrace model", help="commit message (default: Upload TumorTrace model)")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        commit = push(args.folder, args.repo_id, args.private, args.message)
    except ModelLoadError as exc:
        log.error("not publishing: %s", exc)
        return 2
    except Exception as exc:  # network, auth, permissions: say which, no traceback
        log.error("upload to %s failed (%s: %s)", args.repo_id, type(exc).__name__, exc)
        return 1
    print(f"published {args.folder} to {args.repo_id} at commit {commit}; pin it with --revision {commit}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
