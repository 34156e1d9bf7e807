"""The world stage: downstream tasks (lm-eval YAML over JSONL), fictional knowledge kept out of the
world, and the injection plan. Its task YAMLs point at their JSONL where the lab is now (`point_tasks_here`)."""

from __future__ import annotations

from pathlib import Path

from kentropy.evaluation.downstream import task_yaml, write_task
from kentropy.io import write_atomic, write_json
from kentropy.knowledge import generate_knowledge, make_plan
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.lab.text.tasks import METRICS, make_tasks
from kentropy.lab.text.world import build_world


def world_stage(stages: Stages, cfg: LabConfig) -> Done:
    conf = {k: getattr(cfg, k) for k in ("world_seed", "entities", "tasks_per_kind", "knowledge_paraphrase", "knowledge_once",
                                         "knowledge_facts", "injection_rounds", "continual_steps")}

    def fn(d: Path) -> dict:
        world = build_world(cfg.entities, cfg.world_seed)
        tasks = make_tasks(world, cfg.tasks_per_kind, cfg.world_seed)
        for name, rows in tasks.items():
            write_task(str(d / "tasks"), f"lab_{name}", rows, metric=METRICS[name])
        n = cfg.knowledge_paraphrase + cfg.knowledge_once
        entries = generate_knowledge(n, n_paraphrases=cfg.injection_rounds - 1, seed=cfg.world_seed, avoid=world.vocabulary(),
                                     facts=cfg.knowledge_facts)
        write_json(d / "knowledge.json", entries)
        plan = make_plan(entries, paraphrase=cfg.knowledge_paraphrase, once=cfg.knowledge_once, rounds=cfg.injection_rounds,
                         interval=cfg.continual_steps // cfg.injection_rounds)
        write_json(d / "plan.json", plan)
        return {"tasks": [f"lab_{t}" for t in tasks], "task_dir": str(d / "tasks"), "task_metadata": tasks.metadata,
                "knowledge": str(d / "knowledge.json"), "plan": str(d / "plan.json"), "entries": n,
                "world": world.summary()}

    done = stages.run("world", conf, fn, code=("kentropy.lab.text.world", "kentropy.lab.text.tasks", "kentropy.knowledge.generate"))
    point_tasks_here(done.result)
    return done


def point_tasks_here(result: dict) -> None:
    """The task YAMLs name their JSONL by absolute path (lm-eval reads it from the working directory): in a
    lab that was moved or copied since the world stage ran, point them at the JSONL where the lab is now."""
    for task in result["tasks"]:
        yaml = Path(result["task_dir"]) / f"{task}.yaml"
        text = task_yaml(task, yaml.with_suffix(".jsonl").resolve(), metric=METRICS[task.removeprefix("lab_")])
        if yaml.read_text(encoding="utf-8") != text:
            write_atomic(yaml, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
