from mock_provider.cli import main

main()
