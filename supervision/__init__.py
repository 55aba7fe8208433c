"""Crash-only supervision of a service's long-lived asyncio tasks, shared by the edge agent
and the cloud broker (G9: nothing dies silently). See ``_supervisor`` for the strategy;
``_memory`` holds the malloc settings both take at start."""

from ._memory import (
    FullCollections,
    heap_free,
    limit_malloc,
    memory_figures,
    start_heap_trimmer,
    start_memory_log,
    trim_heap,
)
from ._supervisor import Factory, Supervisor, TaskState, failure_reason, task_problems

__all__ = ["Factory", "FullCollections", "Supervisor", "TaskState", "failure_reason",
           "heap_free", "limit_malloc", "memory_figures", "start_heap_trimmer",
           "start_memory_log", "task_problems", "trim_heap"]
