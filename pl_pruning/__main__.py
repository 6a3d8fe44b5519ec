from pl_pruning.cli.app import main

main()
