from pl_pruning.app import main

main()
