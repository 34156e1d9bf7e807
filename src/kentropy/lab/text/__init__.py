"""The lab's text: the generated world, the new domain, their rendering into documents, and downstream tasks."""
