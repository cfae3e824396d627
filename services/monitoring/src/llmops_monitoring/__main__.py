from llmops_monitoring.main import main

main()
