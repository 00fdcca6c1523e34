"""bids_iron.report"""
