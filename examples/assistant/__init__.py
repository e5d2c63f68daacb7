"""The assistant example: a tiny bilingual payment-support LLM, trained, registered, served."""
