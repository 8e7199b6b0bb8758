module llm-observer/tests/go_https

go 1.19
