from llmops_evaluation.main import main

main()
