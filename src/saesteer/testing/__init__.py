"""Test fixtures that run as real processes: a rule-based OpenAI-compatible judge server
(``judge_server``) and the CI scenario that runs the workflow's judge rules against it
(``llm_judge_scenario``; docs/ci.md, "The LLM judge through the workflow")."""
