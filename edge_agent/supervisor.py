"""The agent's supervisor is the shared one (package ``supervision``): this name stays so
the agent's modules import it from their own package."""

from supervision import Factory, Supervisor, TaskState, failure_reason, task_problems

__all__ = ["Factory", "Supervisor", "TaskState", "failure_reason", "task_problems"]
