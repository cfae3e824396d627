from llmops_deployment.main import main

main()
