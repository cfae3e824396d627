from llmops_gateway.main import main

main()
